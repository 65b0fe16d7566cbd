"""`train-speed`: trained words per second of a training config, and where a training step's time
goes (transformer forward and backward, the srl head's parts, the other pipes, the optimizers)."""

import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict

import typer
from spacy.cli._util import parse_config_overrides, show_validation_error
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.util import load_config, registry, resolve_dot_names
from thinc.api import fix_random_seed

from albert_srl.components.model import head_module
from albert_srl.pipeline.benchmark.machine import machine
from albert_srl.pipeline.benchmark.reports import write_report
from albert_srl.pipeline.checkpoint import ResumableBatches
from albert_srl.pipeline.train import update_step

PARTS = (
    "transformer forward",
    "transformer backward",
    "srl targets",
    "srl head forward",
    "srl head backward",
    "senter",
    "optimizer: transformer",
    "optimizer: srl",
    "optimizer: senter",
    "other",
)


@contextmanager
def timed_parts(nlp):
    """Wrap the pipeline's pieces with wall-clock timers; yields the seconds per part (filled as
    steps run). The srl pipe is the transformer's last listener, so its update also runs the
    transformer's backward pass: that time is counted as the transformer's, not the head's."""
    seconds: Dict[str, float] = defaultdict(float)
    patched = []

    def patch(obj, name: str, make: Callable):
        patched.append((obj, name, obj.__dict__.get(name)))
        setattr(obj, name, make(getattr(obj, name)))

    def timer(part: str):
        def make(fn):
            def timed(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    seconds[part] += time.perf_counter() - start

            return timed

        return make

    def transformer_begin_update(begin_update):
        def timed(docs):
            start = time.perf_counter()
            output, backprop = begin_update(docs)
            seconds["transformer forward"] += time.perf_counter() - start
            return output, timer("transformer backward")(backprop)

        return timed

    transformer = nlp.get_pipe("transformer") if "transformer" in nlp.pipe_names else None
    if transformer is not None:
        patch(transformer.model, "begin_update", transformer_begin_update)
    srl = nlp.get_pipe("srl")
    patch(srl, "_targets", timer("srl targets"))
    patch(srl, "_loss", timer("srl head forward"))
    patch(head_module(srl.model), "encode", timer("srl head forward"))
    patch(srl, "update", timer("srl update"))
    components = list(nlp._components)
    for i, (name, pipe) in enumerate(components):
        if not hasattr(pipe, "__dict__"):
            # spaCy's parser is a Cython class without instance attributes: time it through a stand-in
            pipe = TimedPipe(pipe)
            nlp._components[i] = (name, pipe)
        if hasattr(pipe, "finish_update"):
            patch(pipe, "finish_update", timer(f"optimizer: {name}"))
        if name not in ("srl", "transformer") and hasattr(pipe, "update"):
            patch(pipe, "update", timer(name))
    try:
        yield seconds
    finally:
        for obj, name, original in reversed(patched):
            if original is None:
                delattr(obj, name)
            else:
                setattr(obj, name, original)
        nlp._components[:] = components


class TimedPipe:
    """A pipe's stand-in in `nlp.pipeline` whose methods can be wrapped; everything else is the pipe's."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.update = pipe.update
        self.finish_update = pipe.finish_update

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)


def ordered_parts(parts: Dict[str, float]) -> list:
    """PARTS' order, other pipes' own parts (a morphologizer, a parser and their optimizers) before
    `other`, so the shares add up to the step."""
    known = [p for p in PARTS if p != "other" and p in parts]
    return known + sorted(set(parts) - set(PARTS)) + ["other"]


def train_speed_benchmark(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Training config (configs/srl_trf.cfg)", exists=True),
    output: Path = typer.Argument(..., help="JSON to write (a Markdown table goes beside it)"),
    steps: int = typer.Option(50, min=1, help="Training steps to time"),
    warmup: int = typer.Option(3, min=0, help="Steps run first and not timed"),
):
    """Train words/s of CONFIG_PATH (config overrides such as --paths.train as extra options) on its
    own training batches, and the seconds per step of each part. Time it with nothing else running."""
    config = load_config(config_path, overrides=parse_config_overrides(ctx.args), interpolate=False)
    with show_validation_error(hint_fill=False):
        nlp = init_nlp(config)
    resolved = nlp.config.interpolate()
    T = registry.resolve(resolved["training"], schema=ConfigSchemaTraining)
    (train_corpus,) = resolve_dot_names(resolved, [T["train_corpus"]])
    fix_random_seed(T["seed"])
    optimizer = T["optimizer"]
    batches = iter(ResumableBatches(list(train_corpus(nlp)), T["batcher"], T["max_epochs"]))

    def step(batch) -> float:
        start = time.perf_counter()
        update_step(nlp, batch, optimizer, T, dropout=T["dropout"], losses={})
        return time.perf_counter() - start

    for _ in range(warmup):
        step(next(batches)[1])
    words = total = 0.0
    with timed_parts(nlp) as seconds:
        for _ in range(steps):
            batch = next(batches)[1]
            total += step(batch)
            words += sum(len(eg.predicted) for eg in batch)
    parts = dict(seconds)
    parts["srl head backward"] = (
        parts.pop("srl update", 0.0)
        - parts.get("transformer backward", 0.0)
        - parts.get("srl targets", 0.0)
        - parts.get("srl head forward", 0.0)
    )
    parts["other"] = total - sum(parts.values())
    result = {
        "machine": machine(),
        "config": str(config_path),
        "overrides": parse_config_overrides(ctx.args),
        "steps": steps,
        "words": int(words),
        "seconds": total,
        "words_per_s": words / total,
        "seconds_per_step": {part: parts[part] / steps for part in ordered_parts(parts)},
    }
    rows = [
        (part, f"{value:.3f}", f"{100 * value * steps / total:.1f}%")
        for part, value in result["seconds_per_step"].items()
    ]
    rows.append(("step", f"{total / steps:.3f}", f"{words / total:,.0f} trained words/s"))
    write_report(output, result, rows, ("part", "s/step", "share"), models=[])
