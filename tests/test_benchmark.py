"""The benchmark's pipeline variants (its timings are never asserted: they live in metrics/)."""
import pytest
from spacy.tokens import Doc

from albert_srl.pipeline.benchmark import SPEED_OPTIONS, load_with_option


def test_no_overlap_option_encodes_each_token_once(tiny_pipeline):
    trained = load_with_option(str(tiny_pipeline), "fp32")
    flat = load_with_option(str(tiny_pipeline), "no-overlap")
    doc = Doc(flat.vocab, words=["a"] * 300)  # short words: no window is shortened for its wordpieces
    overlapping = trained.get_pipe("transformer").model.attrs["get_spans"]([doc])[0]
    windows = flat.get_pipe("transformer").model.attrs["get_spans"]([doc])[0]
    assert sum(len(w) for w in overlapping) > len(doc)  # the trained config's windows overlap
    assert [(w.start, w.end) for w in windows] == [(0, 128), (128, 256), (256, 300)]


@pytest.mark.parametrize("option", [o for o in SPEED_OPTIONS if o != "bf16"])
def test_speed_options_keep_the_frames_format(tiny_pipeline, option):
    nlp = load_with_option(str(tiny_pipeline), option)
    doc = nlp("John gave Mary the book yesterday.")
    assert "srl_predicates" in doc.spans and "srl_arguments" in doc.spans


def test_options_run_on_a_baseline_without_buckets(tiny_pipeline):
    """Each option is measured against plain padded batches; length-buckets is the only one with groups."""
    for option in ("fp32", "int8", "no-overlap", "length-sorted", "length-buckets"):
        nlp = load_with_option(str(tiny_pipeline), option)
        config = nlp.config["components"]["transformer"]["model"]
        assert config["bucket_tokens"] == (1024 if option == "length-buckets" else 0)
        assert config["cpu_int8"] == (option == "int8") and not config["cpu_bf16"]
