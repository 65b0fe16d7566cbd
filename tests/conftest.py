import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "corpora" / "fixtures"
# Real data lives beside the checkout (CI has it); ALBERT_SRL_SHARED points elsewhere.
SHARED = Path(os.environ.get("ALBERT_SRL_SHARED", REPO.parent / "shared"))
EWT_DIR = SHARED / "corpora" / "ewt-propbank"

needs_ewt = pytest.mark.skipif(
    not (EWT_DIR / "propbank").exists(),
    reason=f"the real EWT PropBank corpus is not at {EWT_DIR} (set ALBERT_SRL_SHARED to the shared/ folder)",
)


@pytest.fixture
def mini_ewt(tmp_path) -> Path:
    """A writable copy of the three-document EWT fixture, for tests that corrupt it."""
    target = tmp_path / "ewt-mini"
    shutil.copytree(FIXTURES / "ewt-mini", target)
    return target


TEXTS = [
    "John gave Mary the book yesterday.",
    "She didn't look it up, which surprised him.",
    "Have a good trip where-ever you end up.",
    "The man, he said, left.",
    "Semantic role labelling finds who did what to whom, when and where.",
]


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
