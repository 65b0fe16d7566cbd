"""albert_srl.TransformerModel.v1: spacy-transformers' model with bf16 autocast on capable CPUs."""
import numpy
import pytest

from albert_srl.components.transformer import cpu_bf16_supported

from conftest import TRF_OVERRIDES, load_refs, make_nlp, train

BF16 = {"components.transformer.model.@architectures": "albert_srl.TransformerModel.v1"}
needs_bf16 = pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no AVX512-BF16 or AMX: the architecture runs in fp32")
TEXT = "John gave Mary the book yesterday. She didn't look it up, which surprised him."


@needs_bf16
def test_bf16_outputs_are_float32_and_close_to_fp32(tiny_albert):
    docs = {}
    for name, overrides in (("fp32", {}), ("bf16", BF16)):
        nlp = make_nlp("srl_trf.cfg", {**TRF_OVERRIDES, **overrides}, tiny_albert)
        nlp.initialize()
        docs[name] = nlp(TEXT)._.trf_data
    for data in docs.values():
        assert all(v.dtype == numpy.float32 for v in data.model_output.values())
    fp32, bf16 = docs["fp32"].tensors[0], docs["bf16"].tensors[0]
    difference = numpy.abs(fp32 - bf16).max()
    assert 0 < difference < 0.1 * numpy.abs(fp32).max()  # rounded to bf16, not another model


@needs_bf16
def test_bf16_pipeline_trains_and_round_trips(tiny_albert, mini_corpus, tmp_path):
    import spacy

    nlp = make_nlp("srl_trf.cfg", {**TRF_OVERRIDES, **BF16}, tiny_albert)
    assert nlp.get_pipe("transformer").model._func.__name__ == "autocast_forward"
    off = make_nlp("srl_trf.cfg", {**TRF_OVERRIDES, **BF16, "components.transformer.model.cpu_bf16": False}, tiny_albert)
    assert off.get_pipe("transformer").model._func.__name__ == "forward"
    refs = load_refs(mini_corpus)[:2]
    first = train(nlp, refs, steps=1)["srl"]
    last = train(nlp, refs, steps=40)["srl"]
    assert last < 0.5 * first
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert loaded.config["components"]["transformer"]["model"]["@architectures"] == "albert_srl.TransformerModel.v1"
    a, b = nlp(TEXT), loaded(TEXT)
    assert [(s.start, s.end, s.label_) for s in a.spans["srl_arguments"]] == [(s.start, s.end, s.label_) for s in b.spans["srl_arguments"]]
