"""`annotate`: the Parquet annotate path against in-memory nlp.pipe (words/s), and its peak RSS on a
store several times larger."""

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds
import spacy
import typer
from wasabi import msg

from albert_srl.pipeline.benchmark.harness import manifest_totals, run_child, run_measured
from albert_srl.pipeline.benchmark.machine import machine
from albert_srl.pipeline.benchmark.reports import write_report
from albert_srl.pipeline.sample_store import write_sample_store


def pipe_child(model: str, store: Path, result: Path, batch_size: int = 32) -> None:
    """(internal) In-memory nlp.pipe over the store's texts: the baseline the Parquet path is held to."""
    texts = ds.dataset(store, format="parquet", partitioning="hive").to_table(columns=["text"])["text"].to_pylist()
    nlp = spacy.load(model)
    nlp.max_length = 2_000_001
    started = time.perf_counter()
    words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=batch_size))
    seconds = time.perf_counter() - started
    result.write_text(
        json.dumps({"docs": len(texts), "words": words, "seconds": seconds, "words_per_s": words / seconds})
    )


def annotate_benchmark(
    model: str = typer.Argument(..., help="Trained pipeline folder"),
    corpus: Path = typer.Argument(..., help="A .spacy corpus whose texts make the store (e.g. corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="JSON file to write"),
    scale: int = typer.Option(
        10, "--scale", help="The larger store repeats the corpus this many times (peak RSS comparison)"
    ),
    batch_size: int = typer.Option(32, "--batch-size"),
) -> None:
    """The Parquet path against in-memory nlp.pipe (words/s), and peak RSS of a store SCALE times larger."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, large = tmp / "store-1x", tmp / f"store-{scale}x"
        write_sample_store(corpus, small, parts_per_genre=2)
        write_sample_store(corpus, large, parts_per_genre=2, repeat=scale)
        msg.info("in-memory nlp.pipe")
        pipe = run_child("pipe", model, str(small), str(tmp / "pipe.json"), "--batch-size", str(batch_size))
        pipe.update(json.loads((tmp / "pipe.json").read_text()))
        runs = {}
        for name, store in (("1x", small), (f"{scale}x", large)):
            msg.info(f"annotate, {name} store")
            out = tmp / f"out-{name}"
            runs[name] = run_measured(
                [
                    sys.executable,
                    "-m",
                    "albert_srl.pipeline.annotate",
                    model,
                    str(store),
                    str(out),
                    "--batch-size",
                    str(batch_size),
                    "--no-fail-on-errors",
                ]
            )
            totals = manifest_totals(out)
            runs[name].update(totals, words_per_s=totals["words"] / totals["seconds"])
    result = {
        "machine": machine(),
        "model": model,
        "corpus": str(corpus),
        "nlp_pipe": pipe,
        "annotate": runs,
        "parquet_vs_pipe_words_per_s": runs["1x"]["words_per_s"] / pipe["words_per_s"],
        f"peak_rss_{scale}x_vs_1x": runs[f"{scale}x"]["peak_rss_mb"] / runs["1x"]["peak_rss_mb"],
    }
    named = {"nlp.pipe (in memory)": pipe, **{f"annotate, {name} store": r for name, r in runs.items()}}
    rows = [(n, f"{r['words']:,}", f"{r['words_per_s']:,.0f}", f"{r['peak_rss_mb']:,.0f}") for n, r in named.items()]
    finding = (
        f"Parquet path / nlp.pipe words/s: {result['parquet_vs_pipe_words_per_s']:.3f}; "
        f"peak RSS {scale}x / 1x: {result[f'peak_rss_{scale}x_vs_1x']:.3f}"
    )
    write_report(output, result, rows, ("run", "words", "words/s", "peak RSS MB"), findings=[finding])
    msg.good(f"{finding} -> {output}")
