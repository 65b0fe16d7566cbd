"""The pipelines under test: loaded as trained or at another encoder precision, and run over a
corpus's own tokens, sentences and predicates (the gold-structure pass)."""

from pathlib import Path
from typing import Callable, Dict, List, Optional

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from albert_srl.components.frames import frame_specs
from albert_srl.components.transformer import cpu_bf16_supported
from albert_srl.pipeline.benchmark.harness import timed

PRECISIONS = ("as-trained", "fp32", "bf16", "int8", "fp16")
CPU_PRECISIONS = ("as-trained", "fp32", "bf16", "int8")
GPU_PRECISIONS = ("as-trained", "fp32", "bf16", "fp16")
GPU_HELP = (
    "Run on this GPU (spaCy's numbering; -1: the CPU); precisions fp32, fp16 or bf16 (CUDA autocast of the encoder)"
)


def precision_overrides(precision: str, on_gpu: bool = False) -> Dict:
    """Config overrides that run a pipeline's encoder in fp32, under CPU bf16 autocast or with int8
    linear layers, or on a GPU in fp32 or under CUDA autocast in fp16 or bf16
    (albert_srl.TransformerModel.v1 loads a TransformerModel.v3 pipeline's weights unchanged)."""
    prefix = "components.transformer.model."
    overrides = {
        prefix + "@architectures": "albert_srl.TransformerModel.v1",
        prefix + "cpu_bf16": precision == "bf16" and not on_gpu,
        prefix + "cpu_int8": precision == "int8",
    }
    if on_gpu:
        overrides.update(
            {prefix + "mixed_precision": precision in ("fp16", "bf16"), prefix + "gpu_bf16": precision == "bf16"}
        )
    return overrides


def check_precision(precision: str, on_gpu: bool) -> None:
    """Raise ValueError for a precision the device does not take, RuntimeError for bf16 on a CPU
    without it."""
    allowed = GPU_PRECISIONS if on_gpu else CPU_PRECISIONS
    if precision not in allowed:
        raise ValueError(
            f"precision on {'a GPU' if on_gpu else 'the CPU'} must be one of {', '.join(allowed)}, not {precision!r}"
        )
    if precision == "bf16" and not on_gpu and not cpu_bf16_supported():
        raise RuntimeError("this CPU has no bf16 support (AVX512-BF16 or AMX)")


def load_pipeline(
    model: str, precision: str = "as-trained", overrides: Optional[Dict] = None, on_gpu: bool = False
) -> Language:
    """A trained pipeline, as trained or with its encoder forced to fp32, bf16 autocast or int8
    (fp32, fp16 or bf16 on a GPU; `use_gpu` first), plus any other config `overrides`."""
    check_precision(precision, on_gpu)
    if precision == "as-trained":
        return spacy.load(model, config=overrides or {})
    return spacy.load(model, config={**precision_overrides(precision, on_gpu), **(overrides or {})})


def transformer_config(model: str) -> Dict:
    """The transformer model section of a trained pipeline's config (its encoder `name`, `get_spans`)."""
    return spacy.util.load_config(Path(model) / "config.cfg", interpolate=True)["components"]["transformer"]["model"]


def count_frames(docs) -> Dict:
    """Predicates and arguments a pipeline wrote (a random head's count says how much work its SRL
    head did)."""
    predicates = sum(len(doc.spans["srl_predicates"]) for doc in docs if "srl_predicates" in doc.spans)
    arguments = sum(len(doc.spans["srl_arguments"]) for doc in docs if "srl_arguments" in doc.spans)
    return {"predicates": predicates, "arguments": arguments}


def gold_structure_run(
    nlp: Language,
    refs: List[Doc],
    batch_size: int,
    with_srl: bool = True,
    seconds: Optional[Dict[str, float]] = None,
    on_gpu: bool = False,
) -> Callable[[], List[Doc]]:
    """A pass of the transformer and the SRL head (or, without `with_srl`, the transformer alone) over
    the corpus's own tokens, sentences and predicates. Both passes of a floor measured this way encode
    the same docs, so the head is all that differs. With `seconds`, each step's seconds are added to it
    batch by batch."""
    transformer, srl = nlp.get_pipe("transformer"), nlp.get_pipe("srl")
    heads = [[spec.head for spec in frame_specs(ref)] for ref in refs]

    def blank(ref):
        return Doc(
            nlp.vocab,
            words=[t.text for t in ref],
            spaces=[bool(t.whitespace_) for t in ref],
            sent_starts=[bool(t.is_sent_start) for t in ref],
        )

    def step(name, work):
        if seconds is None:
            return work()
        out, spent = timed(work, on_gpu)
        seconds[name] = seconds.get(name, 0.0) + spent
        return out

    def run():
        docs = [blank(ref) for ref in refs]
        for i in range(0, len(docs), batch_size):
            batch = step("transformer", lambda: list(transformer.pipe(docs[i : i + batch_size], batch_size=batch_size)))
            docs[i : i + batch_size] = batch
            if with_srl:
                step(
                    "srl", lambda: srl.set_annotations(batch, srl.predict(batch, given_heads=heads[i : i + batch_size]))
                )
        return docs

    return run
