"""Shared test helpers: paths, texts, config overrides and small builders (`make_nlp`, `train`).

Fixtures live in conftest.py; test modules import these with `from common import ...` (pytest puts
tests/ on sys.path, as for conftest.py).
"""

import os
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config
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

TEXTS = [
    "John gave Mary the book yesterday.",
    "She didn't look it up, which surprised him.",
    "Have a good trip where-ever you end up.",
    "The man, he said, left.",
    "Semantic role labelling finds who did what to whom, when and where.",
]

CNN_OVERRIDES = {
    "components.tok2vec.model.encode.width": 64,
    "components.tok2vec.model.encode.depth": 2,
    "components.srl.model.hidden_width": 128,
}
# fp32 keeps the exact-match tests exact; the CPU speed options (bf16, int8) are tested in test_transformer.py
FP32 = {"components.transformer.model.cpu_bf16": False, "components.transformer.model.cpu_int8": False}
TRF_OVERRIDES = {"components.srl.model.hidden_width": 128, **FP32}
# every training run starts from the same random state, so the tests are deterministic
SEED = 0


def load_refs(corpus: Path):
    """The gold docs of a converted corpus's train, dev and test splits."""
    vocab = spacy.blank("en").vocab
    return [
        doc
        for split in ("train", "dev", "test")
        for doc in DocBin().from_disk(corpus / f"{split}.spacy").get_docs(vocab)
    ]


def gold_token_doc(nlp, ref: Doc, with_sents: bool = False) -> Doc:
    """An unannotated doc with the gold doc's tokens (and sentence starts, if asked)."""
    sent_starts = [t.is_sent_start for t in ref] if with_sents else None
    return Doc(
        nlp.vocab, words=[t.text for t in ref], spaces=[bool(t.whitespace_) for t in ref], sent_starts=sent_starts
    )


def comparable(doc: Doc):
    """A doc's frames in a form that compares equal across pipelines and round trips."""
    return [(f.head, f.sense, f.predicate_type, sorted(f.arguments)) for f in frame_specs(doc)]


def make_nlp(config_name: str, overrides: dict, encoder: Path = None):
    """An untrained pipeline from configs/`config_name` with `overrides` (and `paths.encoder`)."""
    config = load_config(
        REPO / "configs" / config_name,
        overrides={**overrides, **({"paths.encoder": str(encoder)} if encoder else {})},
        interpolate=True,
    )
    return load_model_from_config(config, auto_fill=True, validate=True)


def train(nlp, refs, steps: int):
    """Initialize `nlp` on the gold docs and update it `steps` times from the fixed seed; the last losses."""
    fix_random_seed(SEED)
    examples = [Example(gold_token_doc(nlp, ref), ref) for ref in refs]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.001)  # the configs warm up slowly; overfitting wants a flat rate
    losses = {}
    for _ in range(steps):
        losses = {}
        nlp.update(examples, sgd=optimizer, losses=losses, drop=0.0)
    return losses
