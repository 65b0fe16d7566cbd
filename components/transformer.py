"""`albert_srl.TransformerModel.v1`: spacy-transformers' TransformerModel with options that make
it cheaper to run on CPUs and GPUs; all but `cpu_int8` keep its outputs within rounding.

- `cpu_bf16`: on a CPU with native bf16 (AVX512-BF16 or AMX), the encoder runs under
  `torch.autocast("cpu", torch.bfloat16)`; thinc's PyTorch shim only autocasts on CUDA. Outputs
  go on as float32, so listeners, the SRL head and numpy see the usual dtype.
- `cpu_int8`: where bf16 is not used, CPU prediction uses a dynamically int8-quantized copy of the
  encoder's linear layers (training never does). Off by default: it can cost accuracy.
- `gpu_bf16`: with `mixed_precision`, GPUs autocast to bf16 instead of fp16 (no loss scaling).
- `fused_gelu`: ALBERT's `gelu_new` (the tanh approximation of GELU, as eight element-wise
  operations) is swapped for PyTorch's fused kernel of the same formula before the first pass.
- `fast_wordpiece`: a slow BERT WordPiece tokenizer is swapped for its fast equivalent (same ids
  and alignment). Stored weights are not changed; a pipeline saved after the swap stores the fast
  tokenizer (same vocabulary).
- `bucket_tokens`: on CPUs a batch's windows run in groups of similar length instead of one batch
  padded to its longest window: the same vectors and gradients, with less padding computed.
- `layer_mix`: the listeners read a learned softmax-weighted sum of all hidden states (ELMo's
  scalar mix) instead of the last layer's.

Each option wraps the model's forward function; `model.attrs["encoder_options"]` records which
wrapping the model was built with (`cpu_precision`, `gpu_precision` read it).
"""

import tempfile
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy
import torch
from spacy.tokens import Doc
from spacy_transformers.data_classes import WordpieceBatch
from spacy_transformers.layers.transformer_model import TransformerModel
from spacy_transformers.util import registry
from thinc.api import Model

from albert_srl.components.torch_updates import update_in_place


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, tuple):
        return tuple(to_float32(v) for v in value)
    return value


def outputs_to_float32(output) -> None:
    """numpy and cupy have no bf16: outputs that stayed in bf16 (the pooler's, hidden states,
    attentions) go on as float32."""
    model_output = output.model_output
    for key, value in list(model_output.items()):
        model_output[key] = to_float32(value)


def with_cpu_bf16(forward: Callable) -> Callable:
    """On CPUs, `forward` under bf16 autocast, its outputs handed on as float32."""

    def autocast_forward(model, docs: List[Doc], is_train: bool):
        if model.ops.device_type != "cpu":
            return forward(model, docs, is_train)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, backprop = forward(model, docs, is_train)
        outputs_to_float32(output)
        return output, backprop

    return autocast_forward


def with_gpu_bf16(forward: Callable) -> Callable:
    """On GPUs, `mixed_precision` (thinc's CUDA autocast) in bf16 instead of fp16: bf16 keeps fp32's
    exponent range, so no loss scaling is needed (Ampere and later GPUs have bf16 tensor cores)."""

    def gpu_bf16_forward(model, docs: List[Doc], is_train: bool):
        if model.ops.device_type == "cpu":
            return forward(model, docs, is_train)
        # thinc opens its autocast block without a dtype: it takes CUDA's default, set here for the call
        previous = torch.get_autocast_dtype("cuda")
        torch.set_autocast_dtype("cuda", torch.bfloat16)
        try:
            output, backprop = forward(model, docs, is_train)
        finally:
            torch.set_autocast_dtype("cuda", previous)
        outputs_to_float32(output)
        return output, backprop

    return gpu_bf16_forward


def fuse_tanh_gelu(module: torch.nn.Module) -> int:
    """Replace HF's `NewGELUActivation` modules in `module` with PyTorch's fused kernel for the same
    formula; returns how many were replaced."""
    from transformers.activations import NewGELUActivation

    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, torch.nn.GELU(approximate="tanh"))
                replaced += 1
    return replaced


def fast_wordpiece_tokenizer(tokenizer):
    """The fast equivalent of a slow BERT WordPiece tokenizer (MiniLM-as-ALBERT's), else None.

    WordPiece splits on whitespace first, so its offsets never include a space and spacy-transformers
    aligns them correctly, giving the slow tokenizer's ids and alignment. ALBERT's SentencePiece fast
    tokenizer is left alone: its offsets can include the space before a word, which misaligns
    spaCy tokens in spacy-transformers 1.4."""
    from transformers import BertTokenizer, BertTokenizerFast

    if type(tokenizer) is not BertTokenizer:
        return None
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return BertTokenizerFast.from_pretrained(folder)


def prepare_encoder(
    model, fused_gelu: bool = True, fast_wordpiece: bool = True, freeze_embeddings: bool = False
) -> None:
    """The speed swaps that keep the numbers, on the HF objects a TransformerModel holds now:
    the fused tanh GELU in its transformer (and in an int8 copy standing in for it), the fast
    WordPiece tokenizer for a slow BERT one. And, a training choice, `freeze_embeddings`: the word
    embeddings get no gradient, so training skips their update."""
    shim = model.layers[0].shims[0]
    hf_objects = shim._hfmodel
    if freeze_embeddings and shim._model is not None:
        shim._model.get_input_embeddings().weight.requires_grad_(False)
    if fused_gelu:
        for module in {id(m): m for m in (shim._model, hf_objects.transformer) if m is not None}.values():
            fuse_tanh_gelu(module)
    if fast_wordpiece and hf_objects.tokenizer is not None:
        fast = fast_wordpiece_tokenizer(hf_objects.tokenizer)
        if fast is not None:
            hf_objects.tokenizer = fast


def with_prepared_encoder(
    forward: Callable, fused_gelu: bool, fast_wordpiece: bool, freeze_embeddings: bool = False
) -> Callable:
    """`prepare_encoder` before the first forward pass of each HF model the shim holds (one is
    built at initialize, a load replaces it, an int8 copy stands in for it at prediction)."""
    prepared: "weakref.WeakSet" = weakref.WeakSet()

    def prepared_forward(model, docs: List[Doc], is_train: bool):
        hf_model = model.layers[0].shims[0]._model
        if hf_model is not None and hf_model not in prepared:
            prepare_encoder(model, fused_gelu, fast_wordpiece, freeze_embeddings)
            prepared.add(hf_model)
        return forward(model, docs, is_train)

    return prepared_forward


BUCKET_TOKENS = 1024  # padded wordpieces per group: small enough to cut padding, large enough to batch


def length_groups(lengths: numpy.ndarray, max_tokens: int) -> List[numpy.ndarray]:
    """Row indices of `lengths` in groups of similar length, longest first, each group holding at
    most `max_tokens` positions once padded to its own longest row (a longer row is a group alone)."""
    order = numpy.argsort(-lengths, kind="stable")
    groups, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, max_tokens // longest)
        groups.append(order[start : start + size])
        start += size
    return groups


def merge_rows(outputs: List[Tuple[numpy.ndarray, Any]], n_rows: int, width: int):
    """One model output of `n_rows` rows from outputs computed on row groups: sequence outputs
    (last_hidden_state, hidden_states) padded back to `width` with zeros, per-row ones
    (pooler_output) put back in place. None if an output is of another kind (attentions)."""
    first = outputs[0][1]
    merged = {}
    for key in first.keys():
        values = [(rows, out[key]) for rows, out in outputs]
        if key == "last_hidden_state" or key == "pooler_output":
            merged[key] = place_rows(values, n_rows, width if key == "last_hidden_state" else None)
        elif key == "hidden_states":
            merged[key] = tuple(
                place_rows([(rows, v[layer]) for rows, v in values], n_rows, width) for layer in range(len(first[key]))
            )
        else:
            return None
    return type(first)(**merged)


def place_rows(values, n_rows: int, width: Optional[int]) -> torch.Tensor:
    sample = values[0][1]
    shape = (n_rows, width, *sample.shape[2:]) if width is not None else (n_rows, *sample.shape[1:])
    merged = sample.new_zeros(shape)
    with torch.no_grad():  # a copy for the listeners; gradients go back through each group's own graph
        for rows, value in values:
            index = torch.as_tensor(rows, device=value.device)
            if width is None:
                merged[index] = value
            else:
                merged[index, : value.shape[1]] = value
    return merged


def with_length_buckets(forward: Callable, max_tokens: int) -> Callable:
    """Run a batch of windows in groups of similar length, each padded to its own longest.

    spacy-transformers pads every window of a batch to the longest one, so with windows of mixed
    lengths much of what the encoder computes is padding. Each window's own positions give the same
    vectors either way (the attention mask hides padding); padded positions come back as zeros,
    which nothing reads (the alignment points at real wordpieces only). In training each group's
    gradient flows back through its own graph and the weights' gradients add up, as in one batch.
    GPUs, and training with a gradient scaler (mixed precision), run the padded batch as it is."""

    def forward_in_length_buckets(model, wordpieces, is_train: bool):
        n_rows = len(wordpieces)
        # GPUs run the padded batch as it is; a gradient scaler would unscale the summed gradients once per group
        if n_rows < 2 or model.ops.device_type != "cpu" or (is_train and model.shims[0]._grad_scaler._enabled):
            return forward(model, wordpieces, is_train)
        mask = numpy.asarray(wordpieces.attention_mask)
        width = mask.shape[1]
        lengths = mask.sum(axis=1).astype("int64")
        # only right-padded batches (real positions first) can be cut to length
        if not numpy.array_equal(mask != 0, numpy.arange(width)[None, :] < lengths[:, None]):
            return forward(model, wordpieces, is_train)
        groups = length_groups(lengths, max_tokens)
        if len(groups) == 1 and int(lengths.max()) == width:
            return forward(model, wordpieces, is_train)
        parts = []
        for rows in groups:
            longest = int(lengths[rows[0]])
            part = WordpieceBatch(
                strings=[wordpieces.strings[i] for i in rows],
                input_ids=wordpieces.input_ids[rows, :longest],
                attention_mask=wordpieces.attention_mask[rows, :longest],
                lengths=[wordpieces.lengths[i] for i in rows],
                token_type_ids=None if wordpieces.token_type_ids is None else wordpieces.token_type_ids[rows, :longest],
            )
            parts.append((rows, *forward(model, part, is_train)))
        merged = merge_rows([(rows, output) for rows, output, _ in parts], n_rows, width)
        if merged is None:
            return forward(model, wordpieces, is_train)

        def backprop(d_output):
            # spacy-transformers' gradients: (rows, width, dims) per sequence output, (rows, dims) per row
            result = None
            for rows, output, part_backprop in parts:
                index = torch.as_tensor(rows)
                longest = output["last_hidden_state"].shape[1]
                d_part = type(d_output)()
                for key, value in d_output.items():
                    value = value[index.to(value.device)]
                    d_part[key] = value[:, :longest] if value.dim() == 3 else value
                result = part_backprop(d_part)
            return result

        return merged, backprop

    return forward_in_length_buckets


def layer_mix_model() -> Model:
    """The learned mix's parameters, a node of the transformer model so that thinc's optimizer and
    serialization see them: `weights`, one logit per hidden state (the embedding output and each
    layer), and `scale`. Set at the first forward pass, when the number of hidden states is known."""
    return Model("layer_mix", lambda model, X, is_train: (X, lambda dY: dY), params={"weights": None, "scale": None})


def with_layer_mix(forward: Callable, mix: Model) -> Callable:
    """Replace the encoder's `last_hidden_state` with `scale * sum(softmax(weights)[i] * hidden_states[i])`
    (ELMo's scalar mix): the listeners read a learned blend of all layers instead of the last only.
    The mix is computed in torch on the encoder's outputs, so spacy-transformers' backward pass (from
    `last_hidden_state`) runs through it; the weights' gradients are handed to thinc afterwards."""

    def mixed_forward(model, wordpieces, is_train: bool):
        output, backprop = forward(model, wordpieces, is_train)
        states = output.get("hidden_states")
        if states is None:
            raise ValueError(
                "layer_mix needs the encoder's hidden states: set output_hidden_states = true in "
                "[components.transformer.model.transformer_config]"
            )
        if not mix.has_param("weights"):
            mix.set_param("weights", mix.ops.alloc1f(len(states)))
            mix.set_param("scale", mix.ops.asarray1f([1.0]))
        if mix.get_param("weights").shape[0] != len(states):
            raise ValueError(
                f"layer_mix has {mix.get_param('weights').shape[0]} weights but the encoder gives "
                f"{len(states)} hidden states: the pipeline was trained with another encoder depth"
            )
        device = states[-1].device
        weights, scale = (
            torch.tensor(mix.ops.to_numpy(mix.get_param(name)), device=device, requires_grad=is_train)
            for name in ("weights", "scale")
        )
        probs = torch.softmax(weights, dim=0)
        mixed = (scale * sum(probs[i] * state.float() for i, state in enumerate(states))).to(states[-1].dtype)
        # spacy-transformers' backward pass starts from this object's last_hidden_state: the mixed one
        output["last_hidden_state"] = mixed
        # the listeners get the mix alone: every layer's states would be copied into each Doc
        listened = type(output)(**{key: value for key, value in output.items() if key != "hidden_states"})
        if not is_train:
            return listened, backprop

        def mixed_backprop(d_output):
            result = backprop(d_output)  # torch.autograd.backward from the mixed tensor: fills .grad
            for name, tensor in (("weights", weights), ("scale", scale)):
                if tensor.grad is not None:
                    mix.inc_grad(name, mix.ops.asarray1f(tensor.grad.detach().cpu().numpy()))
            return result

        return listened, mixed_backprop

    return mixed_forward


def quantize_linear_int8(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` with its linear layers dynamically quantized to int8."""
    with warnings.catch_warnings():
        # torch 2.13 marks eager-mode quantization deprecated in favour of torchao (not a dependency)
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def with_cpu_int8(forward: Callable) -> Callable:
    """Predict with an int8 copy of the encoder (rebuilt whenever the fp32 weights change); train
    and serialize with the fp32 original, which is only swapped out for the prediction call."""
    copies: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def int8_forward(model, docs: List[Doc], is_train: bool):
        shim = model.layers[0].shims[0]
        original = shim._model
        if is_train:
            # thinc's optimizer writes new weights through numpy, unseen by torch: a training pass
            # is what announces them, so the copy is remade at the next prediction
            copies.pop(original, None)
        if is_train or model.ops.device_type != "cpu" or original is None:
            return forward(model, docs, is_train)
        # a load replaces the module or bumps its parameters' version counters (load_state_dict)
        version = sum(p._version for p in original.parameters())
        cached = copies.get(original)
        if cached is None or cached[0] != version:
            cached = copies[original] = (version, quantize_linear_int8(original).eval())
        shim._model = cached[1]
        try:
            return forward(model, docs, is_train)
        finally:
            shim._model = original

    return int8_forward


@dataclass(frozen=True)
class EncoderOptions:
    """What `create_transformer_model` built a model with, in `model.attrs["encoder_options"]`.
    thinc saves only the attrs msgpack can write, so this is never saved: like the wrapping, it
    follows the config a pipeline is loaded with (and the CPU it is loaded on)."""

    cpu_precision: str  # "bf16", "int8" or "fp32"
    gpu_precision: str  # "bf16" or "fp16" (autocast), or "fp32"
    fused_gelu: bool
    fast_wordpiece: bool
    bucket_tokens: int
    freeze_embeddings: bool
    layer_mix: bool


@registry.architectures("albert_srl.TransformerModel.v1")
def create_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: Dict = {},
    transformer_config: Dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: Dict = {},
    cpu_bf16: bool = True,
    cpu_int8: bool = False,
    gpu_bf16: bool = False,
    fused_gelu: bool = True,
    fast_wordpiece: bool = True,
    bucket_tokens: int = BUCKET_TOKENS,
    freeze_embeddings: bool = False,
    layer_mix: bool = False,
) -> TransformerModel:
    """spacy-transformers.TransformerModel.v3, plus bf16 autocast on CPUs that support it
    (`cpu_bf16`) and, where bf16 is not used, int8 prediction (`cpu_int8`); both ignored on GPUs.
    `gpu_bf16`: with `mixed_precision`, GPUs autocast to bf16 instead of fp16.
    `fused_gelu`: ALBERT's `gelu_new` run as PyTorch's fused kernel (same formula), CPU and GPU;
    `fast_wordpiece`: a slow BERT WordPiece tokenizer replaced by its fast equivalent (same ids);
    `bucket_tokens`: on CPUs a batch's windows run in groups of similar length of at most this many
    padded wordpieces (same vectors and gradients, less padding; 0: one batch padded to its longest).
    `freeze_embeddings`: the word embedding matrix (most of a small encoder's parameters) stays as
    pretrained: training skips its gradient and optimizer step.
    `layer_mix`: the listeners read a learned softmax-weighted sum of all hidden states (embedding
    output and every layer) instead of the last layer's.
    Docs: docs/srl-pipe.md."""
    options = EncoderOptions(
        cpu_precision="bf16" if cpu_bf16 and cpu_bf16_supported() else "int8" if cpu_int8 else "fp32",
        gpu_precision=("bf16" if gpu_bf16 else "fp16") if mixed_precision else "fp32",
        fused_gelu=fused_gelu,
        fast_wordpiece=fast_wordpiece,
        bucket_tokens=bucket_tokens,
        freeze_embeddings=freeze_embeddings,
        layer_mix=layer_mix,
    )
    if layer_mix:
        if mixed_precision and not gpu_bf16:
            # fp16 scales the loss; thinc unscales the encoder's gradients, not the mix's
            raise ValueError(
                "layer_mix does not support fp16 mixed precision: set gpu_bf16 = true, or layer_mix = false"
            )
        transformer_config = {**transformer_config, "output_hidden_states": True}
    model = TransformerModel(name, get_spans, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config)
    model.attrs["encoder_options"] = options
    # A thinc model's forward pass is its `_func`: each option wraps the one before (the length
    # buckets wrap the HF layer's, beneath the tokenizer and alignment).
    hf_layer = model.layers[0]
    if layer_mix:
        # per length group, beneath the buckets: each group's mixed output has its own graph
        mix = layer_mix_model()
        model.layers.append(mix)
        hf_layer._func = with_layer_mix(hf_layer._func, mix)
    if bucket_tokens > 0:
        hf_layer._func = with_length_buckets(hf_layer._func, bucket_tokens)
    if fused_gelu or fast_wordpiece or freeze_embeddings:
        # innermost, so an int8 copy (made from the unfused original) is fused too
        model._func = with_prepared_encoder(model._func, fused_gelu, fast_wordpiece, freeze_embeddings)
    if gpu_bf16:
        model._func = with_gpu_bf16(model._func)
    if options.cpu_precision == "bf16":
        model._func = with_cpu_bf16(model._func)
    elif options.cpu_precision == "int8":
        model._func = with_cpu_int8(model._func)
    return update_in_place(model)


def gpu_precision(model) -> str:
    """What a transformer model built by this module runs on a GPU: fp32, or fp16 or bf16 autocast."""
    return model.attrs["encoder_options"].gpu_precision


def cpu_precision(model) -> str:
    """What a transformer model built by this module runs on a CPU: bf16, int8 or fp32."""
    return model.attrs["encoder_options"].cpu_precision
