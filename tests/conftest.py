import os
import shutil
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import load_config, load_model_from_config
from thinc.api import Adam

from albert_srl.components.frames import frame_specs

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


CNN_OVERRIDES = {
    "components.tok2vec.model.encode.width": 64,
    "components.tok2vec.model.encode.depth": 2,
    "components.srl.model.hidden_width": 128,
}
# fp32 keeps the exact-match tests exact; the CPU speed options (bf16, int8) are tested in test_transformer.py
FP32 = {"components.transformer.model.cpu_bf16": False, "components.transformer.model.cpu_int8": False}
TRF_OVERRIDES = {"components.srl.model.hidden_width": 128, **FP32}


def load_refs(corpus: Path):
    vocab = spacy.blank("en").vocab
    return [
        doc
        for split in ("train", "dev", "test")
        for doc in DocBin().from_disk(corpus / f"{split}.spacy").get_docs(vocab)
    ]


def gold_token_doc(nlp, ref: Doc, with_sents: bool = False) -> Doc:
    sent_starts = [t.is_sent_start for t in ref] if with_sents else None
    return Doc(
        nlp.vocab, words=[t.text for t in ref], spaces=[bool(t.whitespace_) for t in ref], sent_starts=sent_starts
    )


def comparable(doc: Doc):
    return [(f.head, f.sense, f.predicate_type, sorted(f.arguments)) for f in frame_specs(doc)]


def make_nlp(config_name: str, overrides: dict, encoder: Path = None):
    config = load_config(
        REPO / "configs" / config_name,
        overrides={**overrides, **({"paths.encoder": str(encoder)} if encoder else {})},
        interpolate=True,
    )
    return load_model_from_config(config, auto_fill=True, validate=True)


def train(nlp, refs, steps: int):
    examples = [Example(gold_token_doc(nlp, ref), ref) for ref in refs]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.001)  # the configs warm up slowly; overfitting wants a flat rate
    losses = {}
    for _ in range(steps):
        losses = {}
        nlp.update(examples, sgd=optimizer, losses=losses, drop=0.0)
    return losses


@pytest.fixture(scope="session")
def trf_nlp(mini_corpus, tiny_albert):
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
