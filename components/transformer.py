"""spacy-transformers' TransformerModel with bf16 autocast on CPUs that support it.

thinc's PyTorch shim only autocasts on CUDA (`mixed_precision`); on a CPU with AVX512-BF16 or AMX,
bf16 autocast runs the encoder about 2-3x faster (FINDINGS.md). The wrapped forward pass runs the
HF model under `torch.autocast("cpu", torch.bfloat16)` and hands float32 outputs on, so everything
downstream (listeners, the SRL head, numpy) sees the usual dtype.
"""
from typing import Callable, Dict, List

import torch
from spacy.tokens import Doc
from spacy_transformers.layers.transformer_model import TransformerModel
from spacy_transformers.util import registry


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, tuple):
        return tuple(to_float32(v) for v in value)
    return value


def with_cpu_bf16(forward: Callable) -> Callable:
    def autocast_forward(model, docs: List[Doc], is_train: bool):
        if model.ops.device_type != "cpu":
            return forward(model, docs, is_train)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, backprop = forward(model, docs, is_train)
        # numpy has no bf16: outputs that stayed in bf16 (the pooler's, hidden states, attentions) go on as float32
        model_output = output.model_output
        for key, value in list(model_output.items()):
            model_output[key] = to_float32(value)
        return output, backprop

    return autocast_forward


@registry.architectures("albert_srl.TransformerModel.v1")
def create_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: Dict = {},
    transformer_config: Dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: Dict = {},
    cpu_bf16: bool = True,
) -> TransformerModel:
    """spacy-transformers.TransformerModel.v3, plus bf16 autocast on CPUs that support it
    (`cpu_bf16`; ignored elsewhere). Docs: README.md, "The SRL pipe"."""
    model = TransformerModel(name, get_spans, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config)
    if cpu_bf16 and cpu_bf16_supported():
        model._func = with_cpu_bf16(model._func)
    return model
