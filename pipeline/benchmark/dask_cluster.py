"""`dask`: the annotate command in one process against a local Dask cluster, on the same store.
(Not named dask.py, so that it is never mistaken for the dask package.)"""

import sys
import tempfile
from pathlib import Path

import typer
from wasabi import msg

from albert_srl.pipeline.benchmark.harness import manifest_totals, run_measured
from albert_srl.pipeline.benchmark.machine import machine
from albert_srl.pipeline.benchmark.reports import write_report
from albert_srl.pipeline.sample_store import write_sample_store


def dask_benchmark(
    model: str = typer.Argument(..., help="Trained pipeline folder"),
    corpus: Path = typer.Argument(..., help="A .spacy corpus whose texts make the store (e.g. corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="JSON file to write"),
    workers: int = typer.Option(2, "--workers", help="Workers of the local Dask cluster"),
    parts_per_genre: int = typer.Option(2, "--parts-per-genre", help="Parts per genre folder (tasks for Dask)"),
    scale: int = typer.Option(10, "--scale", help="The store repeats the corpus this many times"),
) -> None:
    """One process (torch on all cores) against a local Dask cluster of WORKERS one-thread workers,
    same store; wall time of the whole command (start-up and model loading included)."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = tmp / "store"
        write_sample_store(corpus, store, parts_per_genre=parts_per_genre, repeat=scale)
        commands = {
            "one process": [],
            f"dask, {workers} workers": ["--engine", "dask", "--workers", str(workers)],
        }
        for name, extra in commands.items():
            msg.info(name)
            out = tmp / name.replace(" ", "_").replace(",", "")
            runs[name] = run_measured(
                [
                    sys.executable,
                    "-m",
                    "albert_srl.pipeline.annotate",
                    model,
                    str(store),
                    str(out),
                    "--no-fail-on-errors",
                    *extra,
                ]
            )
            runs[name].update(manifest_totals(out))
            runs[name]["words_per_s_wall"] = runs[name]["words"] / runs[name]["wall_s"]
    one, many = runs["one process"], runs[f"dask, {workers} workers"]
    result = {
        "machine": machine(),
        "model": model,
        "corpus": str(corpus),
        "scale": scale,
        "runs": runs,
        "dask_speedup_wall": one["wall_s"] / many["wall_s"],
    }
    rows = [
        (name, r["parts"], f"{r['words']:,}", f"{r['wall_s']:,.1f}", f"{r['words_per_s_wall']:,.0f}")
        for name, r in runs.items()
    ]
    finding = f"Dask {workers} workers vs one process: {result['dask_speedup_wall']:.2f}x"
    write_report(output, result, rows, ("run", "parts", "words", "wall s", "words/s (wall)"), findings=[finding])
    msg.good(f"{finding} -> {output}")
