"""Benchmarks (timings live here, never in tests). Each measurement runs in its own process, so peak
RSS is that measurement's own."""

import typer

from albert_srl.pipeline.benchmark.annotate import annotate_benchmark, pipe_child
from albert_srl.pipeline.benchmark.dask_cluster import dask_benchmark
from albert_srl.pipeline.benchmark.floor import floor_benchmark, floor_child, floor_interleaved_child
from albert_srl.pipeline.benchmark.options import option_child, options_benchmark
from albert_srl.pipeline.benchmark.per_predicate import (
    per_predicate_benchmark,
    per_predicate_child,
    per_predicate_interleaved_child,
)
from albert_srl.pipeline.benchmark.random_pipeline import random_pipeline
from albert_srl.pipeline.benchmark.train_speed import train_speed_benchmark
from albert_srl.pipeline.benchmark.trf_reference import (
    trf_reference_benchmark,
    trf_reference_child,
    trf_reference_interleaved_child,
)

# --help shows the example on one line (a docstring would have to wrap it)
EXAMPLE = (
    "python -m albert_srl.pipeline.benchmark annotate training/model-best corpus/ewt/dev.spacy "
    "metrics/benchmark-annotate.json"
)
app = typer.Typer(add_completion=False, help=f"{__doc__}\n\n    {EXAMPLE}\n")

# The benchmarks, in the order --help lists them.
app.command("floor")(floor_benchmark)
app.command("annotate")(annotate_benchmark)
app.command("dask")(dask_benchmark)
app.command("per-predicate")(per_predicate_benchmark)
app.command("random-pipeline")(random_pipeline)
app.command("trf-reference")(trf_reference_benchmark)
app.command("options")(options_benchmark)
app.command("train-speed", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    train_speed_benchmark
)

# The measurements the benchmarks run, each in its own process (harness.run_child).
app.command("pipe", hidden=True)(pipe_child)
app.command("floor-child", hidden=True)(floor_child)
app.command("floor-interleaved-child", hidden=True)(floor_interleaved_child)
app.command("per-predicate-child", hidden=True)(per_predicate_child)
app.command("per-predicate-interleaved-child", hidden=True)(per_predicate_interleaved_child)
app.command("trf-reference-child", hidden=True)(trf_reference_child)
app.command("trf-reference-interleaved-child", hidden=True)(trf_reference_interleaved_child)
app.command("option-child", hidden=True)(option_child)
