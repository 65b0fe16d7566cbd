"""Fixtures shared by the test modules; plain helpers and constants live in common.py."""

import shutil
from pathlib import Path

import pytest
from common import FIXTURES, TEXTS, TRF_OVERRIDES, load_refs, make_nlp, train


@pytest.fixture
def mini_ewt(tmp_path) -> Path:
    """A writable copy of the three-document EWT fixture, for tests that corrupt it."""
    target = tmp_path / "ewt-mini"
    shutil.copytree(FIXTURES / "ewt-mini", target)
    return target


@pytest.fixture(scope="session")
def mini_corpus(tmp_path_factory) -> Path:
    """The EWT fixture converted to train/dev/test.spacy."""
    from typer.testing import CliRunner

    from albert_srl.pipeline.convert import app

    out = tmp_path_factory.mktemp("mini-corpus")
    result = CliRunner().invoke(app, ["ewt", str(FIXTURES / "ewt-mini"), str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_albert(tmp_path_factory) -> Path:
    """A tiny random ALBERT with a SentencePiece vocabulary trained on the fixture texts."""
    from albert_srl.pipeline.encoder import build_random_albert, train_sentencepiece

    root = tmp_path_factory.mktemp("tiny-albert")
    spm = train_sentencepiece(TEXTS * 20 + [" ".join(TEXTS)], root / "spm" / "tiny.model", vocab_size=120)
    return build_random_albert(root / "encoder", spm, shape="tiny", seed=0)


@pytest.fixture(scope="session")
def trf_nlp(mini_corpus, tiny_albert):
    """The tiny transformer pipeline overfitted on the fixture corpus (seeded: `train`), and its last losses."""
    nlp = make_nlp("srl_trf.cfg", TRF_OVERRIDES, tiny_albert)
    nlp.get_pipe("transformer")  # exists: the SRL pipe listens to it
    losses = train(nlp, load_refs(mini_corpus), steps=300)
    return nlp, losses


@pytest.fixture(scope="session")
def tiny_pipeline(trf_nlp, tmp_path_factory) -> Path:
    """The overfitted tiny transformer pipeline, saved: what `annotate` loads."""
    path = tmp_path_factory.mktemp("tiny-pipeline") / "model"
    trf_nlp[0].to_disk(path)
    return path
