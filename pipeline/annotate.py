"""Annotate a Parquet document store with a trained SRL pipeline; write tidy Parquet tables.

    python -m albert_srl.pipeline.annotate training/model-best docs/ annotations/

OUTPUT gets `arguments/`, `predicates/`, `tokens/`, `documents/` and `errors/`, each with one Parquet file per
input part (same relative path), plus `_manifest.json`. A killed run resumes where it stopped.
"""

import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import typer
from tqdm import tqdm
from wasabi import msg

from albert_srl.pipeline.annotation import (
    DUPLICATE,
    TABLES,
    AnnotateInputError,
    AnnotateSettings,
    output_schemas,
    pipeline_for,
)
from albert_srl.pipeline.store import (
    Manifest,
    Part,
    PartResult,
    annotate_part,
    discover_parts,
    lock_output,
    publish_part,
    remove_stale_temporaries,
    unpublish,
)

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def annotate(
    model: str = typer.Argument(
        ..., help="Trained pipeline: a folder (training/model-best) or an installed package name"
    ),
    input: Path = typer.Argument(..., help="A Parquet file, a folder of Parquet files, or a hive-partitioned dataset"),
    output: Path = typer.Argument(..., help="Output folder (created; a folder from an interrupted run is resumed)"),
    id_column: str = typer.Option("id", "--id-column", help="Column with the document id (any type)"),
    text_column: str = typer.Option("text", "--text-column", help="Column with the document text"),
    tokens_column: Optional[str] = typer.Option(
        None,
        "--tokens-column",
        help="Column of pre-tokenized input (list of strings), annotated without re-tokenizing; "
        "char offsets then refer to the tokens joined by single spaces",
    ),
    carry: List[str] = typer.Option(
        [],
        "--carry",
        help="Input column to copy into the output tables (repeat, or separate with commas). "
        "Hive partition folders carry through by themselves: the output mirrors them",
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Documents per nlp.pipe batch"),
    batch_chars: int = typer.Option(
        8_000, "--batch-chars", help="Characters per batch at most (a longer document goes alone); bounds memory"
    ),
    n_process: int = typer.Option(1, "--n-process", help="Worker processes for nlp.pipe (CPU)"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="GPU to run on (-1: CPU)"),
    max_chars: int = typer.Option(
        2_000_000, "--max-chars", help="Longer texts are reported as errors instead of annotated"
    ),
    read_rows: int = typer.Option(1024, "--read-rows", help="Rows read from Parquet at a time (bounds memory)"),
    fail_on_errors: bool = typer.Option(
        True,
        "--fail-on-errors/--no-fail-on-errors",
        help="Exit with status 1 when any row or part could not be annotated",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete OUTPUT's earlier results instead of resuming"),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local: this process (and --n-process workers); dask: one task per part on a Dask cluster",
    ),
    scheduler: Optional[str] = typer.Option(
        None,
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786) of an existing cluster; without it a local cluster is started",
    ),
    workers: int = typer.Option(2, "--workers", help="Worker processes of the local Dask cluster (one thread each)"),
) -> None:
    """Annotate INPUT with MODEL into OUTPUT (tables: arguments, predicates, tokens, documents, errors)."""
    settings = AnnotateSettings(
        model=model, id_column=id_column, text_column=text_column, tokens_column=tokens_column,
        carry=tuple(c.strip() for value in carry for c in value.split(",") if c.strip()),
        batch_size=batch_size, batch_chars=batch_chars, n_process=n_process, gpu_id=gpu_id, max_chars=max_chars,
    )  # fmt: skip
    if engine not in ("local", "dask"):
        msg.fail(f"--engine must be local or dask, not {engine!r}")
        raise typer.Exit(2)
    try:
        run = prepare(settings, input, output, overwrite)
    except AnnotateInputError as err:
        msg.fail(str(err))
        raise typer.Exit(2)
    busy = time.perf_counter()
    try:
        if engine == "dask":
            results = run_dask(run, settings, output.resolve(), read_rows, scheduler or None, workers)
        else:
            results = run_local(run, settings, output, read_rows)
    except AnnotateInputError as err:
        msg.fail(str(err))
        raise typer.Exit(2)
    except KeyboardInterrupt:
        done = len(run["manifest"].data["parts"])
        msg.warn(
            f"Interrupted with {done} of {len(run['parts'])} part(s) finished; run the same command again to resume"
        )
        raise typer.Exit(130)
    finally:
        remove_stale_temporaries(output)  # unfinished files of this run or of a lost Dask worker
        run["lock"].release()
    busy = time.perf_counter() - busy
    failed = report(run["manifest"], results, output, time.perf_counter() - run["started"], busy)
    if failed and fail_on_errors:
        raise typer.Exit(1)


def prepare(settings: AnnotateSettings, input: Path, output: Path, overwrite: bool) -> Dict:
    """Everything that can fail before any work: parts, their columns, the model, the lock."""
    started = time.perf_counter()
    parts = discover_parts(input)
    unreadable: Dict[str, str] = {}
    first: Optional[tuple] = None
    for part in parts:
        try:
            schema = pq.read_schema(part.path)
        except Exception as err:  # reported as a failed part; the readable ones go on
            unreadable[part.name] = f"{type(err).__name__}: {err}"
            continue
        try:
            output_schemas(schema, settings)
        except AnnotateInputError as err:
            raise AnnotateInputError(
                f"{part.path}: {err} (see --id-column, --text-column, --tokens-column, --carry)"
            ) from None
        # the output tables of all parts must share a schema, so ids and carried columns must too
        types = [(c, str(schema.field(c).type)) for c in (settings.id_column, *settings.carry)]
        if first is None:
            first = (part.path, types)
        elif any(t != f and "null" not in (t, f) for (_, t), (_, f) in zip(types, first[1])):  # null: an empty file
            raise AnnotateInputError(
                f"{part.path} has column types {types}, {first[0]} has {first[1]}; "
                "make them agree (cast) before annotating"
            )
    if len(unreadable) == len(parts):
        raise AnnotateInputError(
            f"No readable Parquet file in {input}: " + "; ".join(f"{k}: {v}" for k, v in list(unreadable.items())[:3])
        )
    loaded = pipeline_for(settings)
    lock = lock_output(output)
    try:
        if overwrite:
            for name in TABLES:
                shutil.rmtree(output / name, ignore_errors=True)
            (output / "_manifest.json").unlink(missing_ok=True)
        manifest = Manifest(output)
        manifest.check_compatible(settings.fingerprint(), loaded.provenance)
        stale = remove_stale_temporaries(output)
        manifest.forget_missing(parts)
        todo = [p for p in parts if not manifest.done(p)]
        for part in todo:  # final files of a part that was never recorded are not results
            unpublish(part, output)
    except Exception:
        lock.release()
        raise
    if stale:
        msg.info(f"Removed {stale} unfinished file(s) of an interrupted run")
    msg.info(f"{len(parts)} part(s) in {input}: {len(parts) - len(todo)} already done, {len(todo)} to annotate")
    return {"parts": parts, "todo": todo, "manifest": manifest, "lock": lock, "started": started}


def _rows(part: Part) -> int:
    try:
        return pq.ParquetFile(part.path).metadata.num_rows
    except Exception:
        return 0


def run_local(run: Dict, settings: AnnotateSettings, output: Path, read_rows: int) -> List[PartResult]:
    todo: List[Part] = run["todo"]
    manifest: Manifest = run["manifest"]
    results = []
    started, words = time.perf_counter(), 0
    with tqdm(total=sum(_rows(p) for p in todo), unit="doc", desc="annotate", smoothing=0.1) as bar:

        def on_batch(rows: int, tokens: int) -> None:
            nonlocal words
            words += tokens
            bar.update(rows)
            bar.set_postfix_str(f"{words / max(time.perf_counter() - started, 1e-9):,.0f} words/s", refresh=False)

        for part in todo:
            result = publish_part(
                part, annotate_part(part, settings, output, read_rows=read_rows, on_batch=on_batch), output
            )
            manifest.record(result)
            results.append(result)
            if result.error:
                tqdm.write(f"✘ {part.path}: {result.error}")
    return results


def run_dask(
    run: Dict, settings: AnnotateSettings, output: Path, read_rows: int, scheduler: Optional[str], workers: int
) -> List[PartResult]:
    """One task per part on a Dask cluster. Workers load the model once each (the settings carry
    its path, never the model); this process records finished parts in the manifest as they come.
    A task whose worker dies is rerun elsewhere by Dask; its unfinished files never get final names."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise AnnotateInputError("--engine dask needs dask and distributed: pip install 'albert-srl[dask]'") from None
    todo: List[Part] = run["todo"]
    manifest: Manifest = run["manifest"]
    # a worker runs one pipe in its own process; parts are the unit of parallelism. Workers may
    # have another working directory: they get absolute paths.
    model_path = Path(settings.model)
    settings = replace(
        settings, n_process=1, model=str(model_path.resolve()) if model_path.exists() else settings.model
    )
    todo = [replace(part, path=str(Path(part.path).resolve())) for part in todo]
    resources = {"GPU": 1} if settings.gpu_id >= 0 else None
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="30s")
        else:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, resources=resources
            )
            client = Client(cluster)
    except (OSError, TimeoutError) as err:
        raise AnnotateInputError(f"Cannot reach the Dask scheduler {scheduler}: {err}") from None
    results = []
    futures: Dict = {}
    try:
        info = client.scheduler_info()["workers"]
        msg.info(f"Dask: {len(info)} worker(s) at {client.scheduler.address}")
        if resources and not any(w.get("resources", {}).get("GPU") for w in info.values()):
            raise AnnotateInputError(
                "--gpu-id was given but no Dask worker declares a GPU resource (start workers with --resources GPU=1)"
            )
        futures = {
            client.submit(
                annotate_part,
                part,
                settings,
                output,
                read_rows,
                key=f"annotate-{uuid.uuid4().hex[:8]}-{part.name}",
                pure=False,
                resources=resources,
            ): part
            for part in todo
        }
        started = time.perf_counter()
        with tqdm(total=sum(_rows(p) for p in todo), unit="doc", desc="annotate (dask)") as bar:
            words = 0
            for future in as_completed(futures):
                part = futures[future]
                try:
                    result = future.result()
                except Exception as err:  # KilledWorker after Dask's retries, a lost cluster
                    result = PartResult(part.name, error=f"{type(err).__name__}: {err}", fingerprint=part.fingerprint())
                # workers only write temporary files; publishing happens here, under the lock
                result = publish_part(part, result, output)
                manifest.record(result)
                results.append(result)
                words += result.tokens
                bar.update(result.rows)
                bar.set_postfix_str(f"{words / max(time.perf_counter() - started, 1e-9):,.0f} words/s", refresh=False)
                if result.error:
                    tqdm.write(f"✘ {part.path}: {result.error}")
    finally:
        client.cancel(list(futures))  # tasks still running never publish; their temporaries are removed
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def report(manifest: Manifest, results: List[PartResult], output: Path, seconds: float, busy: float) -> int:
    """Print what this run did and what the output holds; the number of failed rows + parts."""
    done = manifest.data["parts"].values()
    failed_parts = manifest.data["failed_parts"]
    new = [r for r in results if r.error is None]
    words = sum(r.tokens for r in new)
    docs = sum(r.rows for r in new)
    busy = max(busy, 1e-9)  # annotating, after the model was loaded here
    msg.divider("Annotation summary")
    rows = [
        ("parts annotated now / done in total / failed", f"{len(new)} / {len(done)} / {len(failed_parts)}"),
        ("rows (documents table)", f"{sum(r['rows'] for r in done):,}"),
        (
            "  annotated / empty / not annotated",
            f"{sum(r['ok'] for r in done):,} / {sum(r['empty'] for r in done):,} / "
            f"{sum(r['failed_rows'] for r in done):,}",
        ),
        (
            "tokens / predicates / arguments",
            f"{sum(r['tokens'] for r in done):,} / {sum(r['predicates'] for r in done):,} / "
            f"{sum(r['arguments'] for r in done):,}",
        ),
        ("this run: seconds in all / annotating", f"{seconds:,.1f} / {busy:,.1f}"),
    ]
    if new:
        rows.append(("this run: docs/s, words/s (annotating)", f"{docs / busy:,.1f}, {words / busy:,.0f}"))
    msg.table(rows, aligns=("l", "r"))
    try:
        duplicates = duplicate_ids_across_parts(output)
    except Exception as err:  # a summary statistic must not fail a finished run
        msg.warn(f"Could not count ids repeated across parts: {type(err).__name__}: {err}")
        duplicates = 0
    if duplicates:
        msg.warn(
            f"{duplicates:,} id(s) occur in more than one part (each part's rows were annotated); find them with: "
            f"SELECT doc_id, list(part) FROM '{output}/documents/**/*.parquet' GROUP BY doc_id HAVING count(*) > 1"
        )
    for name, reason in failed_parts.items():
        msg.fail(f"part {name} was not annotated: {reason} (run again to retry it)")
    failed_rows = sum(r["failed_rows"] for r in done)
    if failed_rows:
        msg.warn(f"{failed_rows:,} row(s) not annotated; reasons in {output / 'errors'}")
    msg.good(f"Output in {output}: " + ", ".join(f"{t}/" for t in TABLES))
    return failed_rows + len(failed_parts)


def duplicate_ids_across_parts(output: Path) -> int:
    """How many ids occur in more than one finished part (within a part they are already errors)."""
    if not (output / "documents").exists():
        return 0
    table = ds.dataset(output / "documents", format="parquet").to_table(columns=["doc_id", "part", "status"])
    table = table.filter(ds.field("status") != DUPLICATE)
    counts = table.group_by("doc_id").aggregate([("part", "count_distinct")])
    return sum(1 for n in counts["part_count_distinct"].to_pylist() if n > 1)


if __name__ == "__main__":
    app()
