"""albert_srl.TransformerModel.v1: spacy-transformers' model with bf16 autocast on capable CPUs and,
when asked, int8 prediction."""

import numpy
import pytest
import torch
from common import TEXTS, TRF_OVERRIDES, load_refs, make_nlp, train

from albert_srl.components.transformer import cpu_bf16_supported, cpu_precision

HEAD = {"components.srl.model.hidden_width": 128}
BF16 = {**TRF_OVERRIDES, "components.transformer.model.cpu_bf16": True}
INT8 = {**TRF_OVERRIDES, "components.transformer.model.cpu_int8": True}
needs_bf16 = pytest.mark.skipif(
    not cpu_bf16_supported(), reason="this CPU has no AVX512-BF16 or AMX: the architecture runs in fp32"
)
TEXT = "John gave Mary the book yesterday. She didn't look it up, which surprised him."


@pytest.fixture(scope="module")
def tiny_wordpiece_albert(tmp_path_factory):
    """A tiny random ALBERT with a slow BERT WordPiece tokenizer: MiniLM-as-ALBERT's layout."""
    import re

    import torch
    from transformers import AlbertConfig, AlbertModel, BertTokenizer

    from albert_srl.pipeline.encoder import SHAPES

    root = tmp_path_factory.mktemp("wordpiece-albert")
    words = sorted({w for text in TEXTS for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    pieces = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *words[::2],
        *sorted({w[:3] for w in words}),
        *sorted({"##" + w[3:] for w in words if len(w) > 3}),
    ]
    (root / "vocab.txt").write_text("\n".join(dict.fromkeys(pieces)) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"))
    torch.manual_seed(0)
    AlbertModel(AlbertConfig(vocab_size=len(tokenizer), hidden_act="gelu", **SHAPES["tiny"])).save_pretrained(
        root / "encoder"
    )
    tokenizer.save_pretrained(root / "encoder")
    return root / "encoder"


def trf_tensor(nlp, text=TEXT):
    data = nlp(text)._.trf_data
    # hidden states (with layer_mix) are a list of arrays
    values = [v for value in data.model_output.values() for v in (value if isinstance(value, list) else [value])]
    assert all(v.dtype == numpy.float32 for v in values)
    return data.tensors[0]


def encoder_of(nlp):
    """The HF model inside the pipeline's transformer."""
    return nlp.get_pipe("transformer").model.transformer


def test_default_config_runs_bf16_where_the_cpu_has_it(tiny_albert):
    """The shipped configs turn on bf16 where the CPU has it; int8 only when asked (it cost F1)."""
    no_autocast = {**HEAD, "components.transformer.model.mixed_precision": False}
    for config in ("srl_trf.cfg", "srl_trf_gpu.cfg"):
        nlp = make_nlp(config, no_autocast, tiny_albert)
        assert cpu_precision(nlp.get_pipe("transformer").model) == ("bf16" if cpu_bf16_supported() else "fp32")
        asked = make_nlp(
            config,
            {
                **no_autocast,
                "components.transformer.model.cpu_bf16": False,
                "components.transformer.model.cpu_int8": True,
            },
            tiny_albert,
        )
        assert cpu_precision(asked.get_pipe("transformer").model) == "int8"
    assert cpu_precision(make_nlp("srl_trf.cfg", TRF_OVERRIDES, tiny_albert).get_pipe("transformer").model) == "fp32"


@needs_bf16
def test_bf16_outputs_are_float32_and_close_to_fp32(tiny_albert):
    tensors = {}
    for name, overrides in (("fp32", TRF_OVERRIDES), ("bf16", BF16)):
        nlp = make_nlp("srl_trf.cfg", overrides, tiny_albert)
        nlp.initialize()
        tensors[name] = trf_tensor(nlp)
    difference = numpy.abs(tensors["fp32"] - tensors["bf16"]).max()
    assert 0 < difference < 0.1 * numpy.abs(tensors["fp32"]).max()  # rounded to bf16, not another model


@needs_bf16
def test_bf16_pipeline_trains_and_round_trips(tiny_albert, mini_corpus, tmp_path):
    import spacy

    nlp = make_nlp("srl_trf.cfg", BF16, tiny_albert)
    assert cpu_precision(nlp.get_pipe("transformer").model) == "bf16"
    refs = load_refs(mini_corpus)[:2]
    first = train(nlp, refs, steps=1)["srl"]
    last = train(nlp, refs, steps=40)["srl"]
    assert last < 0.5 * first
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert loaded.config["components"]["transformer"]["model"]["@architectures"] == "albert_srl.TransformerModel.v1"
    a, b = nlp(TEXT), loaded(TEXT)
    assert [(s.start, s.end, s.label_) for s in a.spans["srl_arguments"]] == [
        (s.start, s.end, s.label_) for s in b.spans["srl_arguments"]
    ]


def test_int8_predicts_close_to_fp32_and_keeps_fp32_weights(tiny_albert):
    import torch

    tensors = {}
    for name, overrides in (("fp32", TRF_OVERRIDES), ("int8", INT8)):
        nlp = make_nlp("srl_trf.cfg", overrides, tiny_albert)
        nlp.initialize()
        tensors[name] = trf_tensor(nlp)
    assert cpu_precision(nlp.get_pipe("transformer").model) == "int8"
    difference = numpy.abs(tensors["fp32"] - tensors["int8"]).max()
    assert 0 < difference < 0.1 * numpy.abs(tensors["fp32"]).max()  # quantized, not another model
    # the int8 copy is only swapped in for the prediction: training and serialization see fp32 Linear layers
    encoder = encoder_of(nlp)
    assert any(type(m) is torch.nn.Linear for m in encoder.modules())
    assert not any("packed" in key for key in encoder.state_dict())


def test_int8_copy_follows_training_and_round_trips(tiny_albert, mini_corpus, tmp_path):
    """A stale int8 copy would go on predicting with the weights it was made from."""
    import spacy

    nlp = make_nlp("srl_trf.cfg", INT8, tiny_albert)
    refs = load_refs(mini_corpus)[:2]
    train(nlp, refs, steps=1)
    before = trf_tensor(nlp)  # makes the int8 copy of the weights after one step
    losses = train(nlp, refs, steps=30)
    assert losses["srl"] > 0
    after = trf_tensor(nlp)
    nlp.to_disk(tmp_path / "model")
    fp32 = spacy.load(tmp_path / "model", config={"components.transformer.model.cpu_int8": False})
    reference = trf_tensor(fp32)
    assert numpy.abs(after - reference).max() < numpy.abs(before - reference).max()
    int8 = spacy.load(tmp_path / "model")
    assert cpu_precision(int8.get_pipe("transformer").model) == "int8"
    numpy.testing.assert_allclose(trf_tensor(int8), after, atol=1e-5)


def test_fused_gelu_swaps_albert_activation_and_keeps_outputs(tiny_albert, mini_corpus, tmp_path):
    """gelu_new and PyTorch's fused tanh GELU are one formula: same outputs, stored config untouched."""
    import spacy
    import torch
    from transformers.activations import NewGELUActivation

    def activations(nlp):
        return [type(m) for m in encoder_of(nlp).modules() if isinstance(m, (NewGELUActivation, torch.nn.GELU))]

    unfused = make_nlp("srl_trf.cfg", {**TRF_OVERRIDES, "components.transformer.model.fused_gelu": False}, tiny_albert)
    unfused.initialize()
    reference = trf_tensor(unfused)
    assert set(activations(unfused)) == {NewGELUActivation}
    nlp = make_nlp("srl_trf.cfg", TRF_OVERRIDES, tiny_albert)
    nlp.initialize()
    assert set(activations(nlp)) == {NewGELUActivation}  # swapped at the first forward pass, not before
    numpy.testing.assert_allclose(trf_tensor(nlp), reference, atol=1e-5)
    assert activations(nlp) and set(activations(nlp)) == {torch.nn.GELU}
    assert encoder_of(nlp).config.hidden_act == "gelu_new"
    # training runs through the fused kernel, and a loaded pipeline (a new HF model) is fused again
    train(nlp, load_refs(mini_corpus)[:2], steps=2)
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    numpy.testing.assert_allclose(trf_tensor(loaded), trf_tensor(nlp), atol=1e-5)
    assert set(activations(loaded)) == {torch.nn.GELU}


def test_fast_wordpiece_tokenizer_gives_the_slow_ones_ids_and_alignment(tiny_wordpiece_albert, tmp_path):
    import spacy

    text = " ".join(TEXTS)
    slow = make_nlp(
        "srl_trf.cfg", {**TRF_OVERRIDES, "components.transformer.model.fast_wordpiece": False}, tiny_wordpiece_albert
    )
    slow.initialize()
    expected = slow(text)._.trf_data
    assert type(slow.get_pipe("transformer").model.tokenizer).__name__ == "BertTokenizer"
    nlp = make_nlp("srl_trf.cfg", TRF_OVERRIDES, tiny_wordpiece_albert)
    nlp.initialize()
    data = nlp(text)._.trf_data
    assert type(nlp.get_pipe("transformer").model.tokenizer).__name__ == "BertTokenizerFast"
    assert data.wordpieces.strings == expected.wordpieces.strings and "[UNK]" not in data.wordpieces.strings[0]
    assert any(
        piece.startswith("##") for piece in data.wordpieces.strings[0]
    )  # words split into pieces: alignment is tested
    numpy.testing.assert_array_equal(data.align.lengths, expected.align.lengths)
    numpy.testing.assert_array_equal(data.align.dataXd, expected.align.dataXd)
    numpy.testing.assert_allclose(data.tensors[0], expected.tensors[0], atol=1e-6)
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    numpy.testing.assert_allclose(trf_tensor(loaded, text), data.tensors[0], atol=1e-6)
    assert type(loaded.get_pipe("transformer").model.tokenizer).__name__ == "BertTokenizerFast"


def test_length_buckets_trim_padding_and_put_rows_back():
    """Windows run in groups of similar length, each cut to its own longest; rows come back in place."""
    from types import SimpleNamespace

    import torch
    from spacy_transformers.data_classes import WordpieceBatch
    from thinc.api import NumpyOps
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from albert_srl.components.transformer import with_length_buckets

    shapes = []

    def forward(model, wordpieces, is_train):
        # each position's vector is its id: where a row lands after merging is checkable
        shapes.append(wordpieces.input_ids.shape)
        states = torch.as_tensor(wordpieces.input_ids, dtype=torch.float32)[:, :, None].repeat(1, 1, 2)
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=states[:, 0] * 2), None

    lengths = [3, 7, 2, 7, 5]
    ids = numpy.zeros((len(lengths), 7), dtype="int64")
    for row, length in enumerate(lengths):
        ids[row, :length] = numpy.arange(1, length + 1) + 10 * row
    mask = (ids > 0).astype("float32")
    batch = WordpieceBatch(
        strings=[[str(i) for i in row if i] for row in ids],
        input_ids=ids,
        attention_mask=mask,
        lengths=lengths,
        token_type_ids=None,
    )
    cpu_layer = SimpleNamespace(ops=NumpyOps())
    padded, _ = forward(cpu_layer, batch, False)
    shapes.clear()
    output, _ = with_length_buckets(forward, max_tokens=14)(cpu_layer, batch, False)
    assert shapes == [(2, 7), (2, 5), (1, 2)]  # longest first, at most 14 padded positions each
    assert output.last_hidden_state.shape == padded.last_hidden_state.shape
    real = torch.as_tensor(mask, dtype=torch.bool)
    assert torch.equal(output.last_hidden_state[real], padded.last_hidden_state[real])
    assert not output.last_hidden_state[~real].any()  # padding comes back as zeros
    assert torch.equal(output.pooler_output, padded.pooler_output)
    # left-padded batches run as they are
    shapes.clear()
    with_length_buckets(forward, max_tokens=14)(
        cpu_layer, WordpieceBatch(batch.strings, ids[:, ::-1].copy(), mask[:, ::-1].copy(), lengths, None), False
    )
    assert shapes == [(5, 7)]


def test_length_buckets_give_the_padded_batchs_gradients(tiny_albert):
    """Training in groups: the same outputs and the same weight gradients as the padded batch."""
    import torch
    from spacy_transformers.data_classes import WordpieceBatch
    from spacy_transformers.layers.transformer_model import huggingface_tokenize
    from transformers.file_utils import ModelOutput

    from albert_srl.components.transformer import with_length_buckets

    nlp = make_nlp("srl_trf.cfg", {**TRF_OVERRIDES, "components.transformer.model.bucket_tokens": 0}, tiny_albert)
    nlp.initialize()
    hf_layer = nlp.get_pipe("transformer").model.layers[0]
    hf_model = encoder_of(nlp)
    assert (
        hf_model.config.hidden_dropout_prob == 0 and hf_model.config.attention_probs_dropout_prob == 0
    )  # same numbers both ways
    texts = TEXTS + [" ".join(TEXTS[: k + 2]) for k in range(len(TEXTS) - 1)]
    wordpieces = WordpieceBatch.from_batch_encoding(
        huggingface_tokenize(nlp.get_pipe("transformer").model.tokenizer, texts)
    )
    mask = torch.as_tensor(wordpieces.attention_mask)[:, :, None]
    padded_forward = hf_layer._func

    def step(func):
        hf_model.zero_grad()
        output, backprop = func(hf_layer, wordpieces, True)
        # gradients reach real wordpieces only (the listeners' alignment), as in spacy-transformers
        gradient = (
            torch.sin(torch.arange(output.last_hidden_state.numel(), dtype=torch.float32)).reshape(
                output.last_hidden_state.shape
            )
            * mask
        )
        backprop(ModelOutput(output_0=gradient))
        return output.last_hidden_state * mask, {
            name: p.grad.clone() for name, p in hf_model.named_parameters() if p.grad is not None
        }

    expected, expected_grads = step(padded_forward)
    groups = []
    hook = hf_model.register_forward_pre_hook(
        lambda module, args, kwargs: groups.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    got, grads = step(with_length_buckets(padded_forward, max_tokens=64))
    hook.remove()
    assert (
        len({g[1] for g in groups}) > 2 and max(g[0] for g in groups) > 1
    )  # groups of several rows, of several widths
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-4, rtol=1e-4, msg=name)


def test_length_buckets_keep_the_pipelines_predictions(tiny_pipeline, mini_corpus):
    """Small buckets against one padded batch, on a trained pipeline: same frames, same vectors."""
    import spacy

    texts = [doc.text for doc in load_refs(mini_corpus)] + [" ".join(TEXTS) * 3]
    padded = spacy.load(tiny_pipeline, config={"components": {"transformer": {"model": {"bucket_tokens": 0}}}})
    nlp = spacy.load(tiny_pipeline, config={"components": {"transformer": {"model": {"bucket_tokens": 64}}}})
    widths = []
    hook = encoder_of(nlp).register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    docs = list(nlp.pipe(texts, batch_size=len(texts)))
    hook.remove()
    assert len(widths) > 1 and len({w[1] for w in widths}) > 1  # several groups, of different widths
    expected = list(padded.pipe(texts, batch_size=len(texts)))

    def frames(doc):
        return [(s.start, s.end, s.label_) for key in ("srl_predicates", "srl_arguments") for s in doc.spans[key]]

    assert any(frames(doc) for doc in docs)
    for doc, reference in zip(docs, expected):
        assert frames(doc) == frames(reference)
        numpy.testing.assert_allclose(aligned_states(doc), aligned_states(reference), atol=1e-5)


def aligned_states(doc):
    """The wordpiece vectors the alignment points at (what the listeners read)."""
    data = doc._.trf_data
    states = data.tensors[0]
    return states.reshape(-1, states.shape[-1])[data.align.dataXd.ravel()]


def test_a_pipeline_trains_in_length_buckets(tiny_albert, mini_corpus):
    from common import gold_token_doc
    from spacy.training import Example
    from thinc.api import Adam

    nlp = make_nlp("srl_trf.cfg", {**TRF_OVERRIDES, "components.transformer.model.bucket_tokens": 64}, tiny_albert)
    nlp.get_pipe("transformer")
    refs = load_refs(mini_corpus)[:6]
    train(nlp, refs, steps=1)  # initialize
    examples = [Example(gold_token_doc(nlp, ref), ref) for ref in refs]
    optimizer = Adam(0.001)
    training_passes = []
    hook = encoder_of(nlp).register_forward_pre_hook(
        lambda module, args, kwargs: training_passes.append(module.training), with_kwargs=True
    )
    losses = []
    for _ in range(8):
        step = {}
        nlp.update(examples, sgd=optimizer, losses=step, drop=0.0)
        losses.append(step["srl"])
    hook.remove()
    assert sum(training_passes) > 8  # more encoder passes than updates: the batches ran in groups
    assert losses[-1] < losses[0]


def test_gpu_bf16_sets_the_cuda_autocast_dtype_for_the_call_only():
    """thinc's CUDA autocast takes CUDA's default dtype: `gpu_bf16` makes it bf16 for the encoder's
    call, hands float32 outputs on (cupy has no bf16), restores the default after, even on an
    error, and leaves CPU calls alone. Checked with a stand-in model: it needs no GPU."""
    from types import SimpleNamespace

    import torch

    from albert_srl.components.transformer import with_gpu_bf16

    seen = []

    def forward(model, docs, is_train):
        seen.append(torch.get_autocast_dtype("cuda"))
        if docs == "fail":
            raise RuntimeError("out of memory")
        output = SimpleNamespace(
            model_output={
                "last_hidden_state": torch.ones(2, 3, dtype=torch.bfloat16),
                "hidden_states": (torch.ones(1, dtype=torch.bfloat16),),
            }
        )
        return output, None

    default = torch.get_autocast_dtype("cuda")
    on_gpu, on_cpu = (SimpleNamespace(ops=SimpleNamespace(device_type=kind)) for kind in ("gpu", "cpu"))
    output, _ = with_gpu_bf16(forward)(on_gpu, [], False)
    assert seen == [torch.bfloat16] and torch.get_autocast_dtype("cuda") == default
    assert output.model_output["last_hidden_state"].dtype == torch.float32
    assert output.model_output["hidden_states"][0].dtype == torch.float32
    with pytest.raises(RuntimeError, match="out of memory"):
        with_gpu_bf16(forward)(on_gpu, "fail", False)
    assert torch.get_autocast_dtype("cuda") == default
    output, _ = with_gpu_bf16(forward)(on_cpu, [], False)
    assert seen[-1] == default and output.model_output["last_hidden_state"].dtype == torch.bfloat16


def test_frozen_embeddings_stay_as_pretrained_while_the_layers_train(tiny_albert, mini_corpus, tmp_path):
    import spacy

    frozen = {**TRF_OVERRIDES, "components.transformer.model.freeze_embeddings": True}
    nlp = make_nlp("srl_trf.cfg", frozen, tiny_albert)
    nlp.initialize()
    encoder = encoder_of(nlp)
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    train(nlp, load_refs(mini_corpus)[:2], steps=2)
    embeddings = encoder.get_input_embeddings().weight
    assert not embeddings.requires_grad and embeddings.grad is None
    changed = {name for name, p in encoder.named_parameters() if not (p.detach() == before[name]).all()}
    assert "embeddings.word_embeddings.weight" not in changed
    assert any("encoder" in name for name in changed)
    # a loaded pipeline (as a resumed run loads its checkpoint) has the trained weights, and its
    # embeddings are frozen again from its first forward pass
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    numpy.testing.assert_allclose(trf_tensor(loaded), trf_tensor(nlp), atol=1e-5)
    assert not encoder_of(loaded).get_input_embeddings().weight.requires_grad


def test_layer_mix_learns_its_weights_and_round_trips(tiny_albert, mini_corpus, tmp_path):
    import spacy

    mixed = {**TRF_OVERRIDES, "components.transformer.model.layer_mix": True}
    nlp = make_nlp("srl_trf.cfg", mixed, tiny_albert)
    nlp.initialize()
    mix = nlp.get_pipe("transformer").model.layers[-1]
    n_states = encoder_of(nlp).config.num_hidden_layers + 1
    # the listeners start from the uniform mix of the embedding output and every layer (and get
    # only the mix, not each layer's states)
    data = nlp(TEXT)._.trf_data
    assert "hidden_states" not in data.model_output
    wordpieces = data.wordpieces
    with torch.no_grad():
        states = encoder_of(nlp)(
            input_ids=torch.as_tensor(wordpieces.input_ids),
            attention_mask=torch.as_tensor(wordpieces.attention_mask),
            output_hidden_states=True,
        ).hidden_states
    assert len(states) == n_states and mix.get_param("weights").shape == (n_states,)
    uniform = (sum(states) / n_states).numpy()
    real = numpy.asarray(wordpieces.attention_mask, dtype=bool)
    numpy.testing.assert_allclose(data.model_output["last_hidden_state"][real], uniform[real], atol=1e-5)
    train(nlp, load_refs(mini_corpus)[:2], steps=3)
    weights, scale = mix.get_param("weights").copy(), mix.get_param("scale").copy()
    assert not numpy.allclose(weights, 0.0) and not numpy.allclose(scale, 1.0)
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    numpy.testing.assert_allclose(trf_tensor(loaded), trf_tensor(nlp), atol=1e-5)
    numpy.testing.assert_array_equal(loaded.get_pipe("transformer").model.layers[-1].get_param("weights"), weights)
    # fp16 scales the loss, which the mix's own gradients would not see undone
    with pytest.raises(ValueError, match="fp16"):
        make_nlp("srl_trf.cfg", {**mixed, "components.transformer.model.mixed_precision": True}, tiny_albert)
