"""The training configs are complete (`spacy init fill-config` adds nothing) and the GPU config differs
from the CPU one only where a GPU is meant to differ."""

import pytest
import spacy
from common import FP32, REPO
from spacy.cli.init_config import fill_config
from spacy.tokens import DocBin
from spacy.util import load_config

from albert_srl.pipeline.train import train

CONFIGS = sorted((REPO / "configs").glob("*.cfg"))

# Keys of configs/srl_trf_gpu.cfg whose values differ from configs/srl_trf.cfg; every other key is the same.
GPU_ONLY_KEYS = {
    # albert-base-v2, the full-size encoder, instead of the CPU config's small local one
    "paths.encoder",
    # spacy-transformers' fp16 autocast, which runs on GPUs only
    "components.transformer.model.mixed_precision",
    # a wider SRL head for the larger encoder
    "components.srl.model.hidden_width",
    # a GPU affords a ten times longer run, evaluated less often
    "training.max_steps",
    "training.eval_frequency",
    # larger batches fit in GPU memory
    "training.batcher.size",
    # the schedule of the larger encoder: a longer warm-up to a lower peak, decaying to zero at max_steps
    # (the CPU config stops at 8,000 of its 10,400 decay steps)
    "training.optimizer.learn_rate.warmup_steps",
    "training.optimizer.learn_rate.total_steps",
    "training.optimizer.learn_rate.initial_rate",
}


def flatten(section: dict, prefix: str = "") -> dict:
    """A config's values by dotted key (`training.batcher.size`); empty sections are kept as {}."""
    flat = {}
    for key, value in section.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_training_configs_are_filled(path, tmp_path):
    """`spacy init fill-config` leaves every training config as it is: all its settings are written out."""
    if "training" not in load_config(path, interpolate=False):
        pytest.skip(f"{path.name} is not a training config")
    config, filled = fill_config(tmp_path / path.name, path, silent=True)
    before, after = flatten(config), flatten(filled)
    changed = {
        key: after.get(key, "<removed>")
        for key in before.keys() | after.keys()
        if before.get(key, ...) != after.get(key, ...)
    }
    assert config == filled, f"fill-config sets {changed}"


def test_gpu_config_differs_from_cpu_config_only_in_gpu_keys():
    cpu = flatten(load_config(REPO / "configs" / "srl_trf.cfg", interpolate=False))
    gpu = flatten(load_config(REPO / "configs" / "srl_trf_gpu.cfg", interpolate=False))
    differ = {key for key in cpu.keys() | gpu.keys() if cpu.get(key, ...) != gpu.get(key, ...)}
    assert differ == GPU_ONLY_KEYS, (
        f"new differences: {differ - GPU_ONLY_KEYS}; no longer different: {GPU_ONLY_KEYS - differ}"
    )


def test_syntax_config_trains_morphologizer_parser_and_srl(mini_corpus, tiny_albert, tmp_path):
    """configs/srl_trf_syntax.cfg trains on the fixture's UD trees and its pipeline predicts POS,
    features, dependencies and frames."""
    overrides = {
        "paths.train": str(mini_corpus / "train.spacy"),
        "paths.dev": str(mini_corpus / "dev.spacy"),
        "paths.encoder": str(tiny_albert),
        "components.srl.model.hidden_width": 64,
        "components.parser.min_action_freq": 1,  # the fixture has each relation once or twice
        "training.max_steps": 20,
        "training.eval_frequency": 10,
        **FP32,
    }
    train(load_config(REPO / "configs" / "srl_trf_syntax.cfg", overrides=overrides), tmp_path)
    nlp = spacy.load(tmp_path / "model-last")
    assert nlp.pipe_names == ["transformer", "senter", "morphologizer", "parser", "srl"]
    assert {"dep_las", "pos_acc", "srl_f"} <= set(nlp.meta["performance"])
    doc = nlp("John gave Mary the book yesterday.")
    assert doc.has_annotation("DEP") and doc.has_annotation("POS") and doc.has_annotation("MORPH")
    assert "srl_predicates" in doc.spans and "srl_arguments" in doc.spans  # the srl pipe annotated it
    # `evaluate` reports the syntax beside the frames
    from albert_srl.pipeline.evaluate import evaluate

    refs = list(DocBin().from_disk(mini_corpus / "dev.spacy").get_docs(nlp.vocab))
    scores, _ = evaluate(nlp, refs)
    assert all(0.0 <= scores[key] <= 1.0 for key in ("pos_acc", "morph_acc", "dep_uas", "dep_las"))
    assert scores["dep_las"] <= scores["dep_uas"]
    # `annotate` writes the predicted POS, features and trees in its tokens table
    import pyarrow as pa

    from albert_srl.pipeline.annotation import AnnotateSettings, annotate_table

    texts = ["John gave Mary the book yesterday. She read it.", "The man, he said, left."]
    settings = AnnotateSettings(model=str(tmp_path / "model-last"))
    tokens = annotate_table(pa.table({"id": [1, 2], "text": texts}), settings)["tokens"].to_pandas()
    assert len(tokens) == sum(len(nlp(t)) for t in texts)
    assert tokens[["pos", "morph", "head", "dep"]].notna().all().all()
    sentence = dict(zip(zip(tokens.doc_id, tokens.token_idx), tokens.sent_idx))
    assert all(sentence[(d, h)] == s for d, h, s in zip(tokens.doc_id, tokens["head"], tokens.sent_idx))
    roots = tokens[tokens["head"] == tokens.token_idx]
    assert set(roots.dep) == {"ROOT"}
    assert set(zip(roots.doc_id, roots.sent_idx)) == set(zip(tokens.doc_id, tokens.sent_idx))  # a root per sentence
