"""Benchmarks (timings live here, never in tests). Each measurement runs in its own process, so peak
RSS is that measurement's own.

    python -m albert_srl.pipeline.benchmark annotate training/model-best corpus/ewt/dev.spacy metrics/benchmark-annotate.json
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pyarrow.dataset as ds
import typer
from wasabi import msg

from albert_srl.pipeline.sample_store import write_sample_store

app = typer.Typer(add_completion=False, help=__doc__)


def run_measured(command: List[str]) -> Dict:
    """Run a child process; its wall time and peak RSS (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"wall_s": time.perf_counter() - started, "peak_rss_mb": usage.ru_maxrss / 1024}


def manifest_totals(output: Path) -> Dict:
    """Parts, rows, words and annotating seconds of a finished annotate output."""
    parts = json.loads((output / "_manifest.json").read_text())["parts"].values()
    return {
        "parts": len(parts),
        "docs": sum(p["rows"] for p in parts),
        "words": sum(p["tokens"] for p in parts),
        "seconds": sum(p["seconds"] for p in parts),
    }


def run_rows(runs: Dict) -> tuple:
    """Table rows and header for runs with words, words/s and peak memory (GPU memory where measured)."""
    on_gpu = any("peak_gpu_mb" in r for r in runs.values())
    rows = [
        (
            n,
            f"{r['words']:,}",
            f"{r['words_per_s']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
            *([f"{r.get('peak_gpu_mb', 0):,.0f}"] if on_gpu else []),
        )
        for n, r in runs.items()
    ]
    return rows, ("run", "words", "words/s", "peak RSS MB", *(["peak GPU MB"] if on_gpu else []))


def write_report(
    output: Path,
    result: Dict,
    rows: List[tuple],
    header: tuple,
    models: Optional[List[str]] = None,
    findings: Sequence[str] = (),
) -> None:
    """Save the benchmark's JSON, and its table as Markdown beside it (OUTPUT with .md) under a
    header saying when, on what machine and with which pipelines (`models`, else the result's
    `model`) and settings it was measured, followed by the `findings` (the ratios the table does not
    show); print the table."""
    output.parent.mkdir(parents=True, exist_ok=True)
    models = models if models is not None else [result["model"]] if result.get("model") else []
    result = {**result, "pipelines": {m: pipeline_summary(m) for m in models}}
    output.write_text(json.dumps(result, indent=2))
    output.with_suffix(".md").write_text(
        markdown_report(output, result, rows, header) + "".join(f"\n{line}\n" for line in findings)
    )
    msg.table(rows, header=header, aligns=("l",) + ("r",) * (len(header) - 1))


def pipeline_summary(model: str) -> Dict:
    """A trained pipeline's components, encoder and SRL head settings, read from its config.cfg
    (the encoder's shape too where its folder is at hand); {} for a path without a config."""
    config_path = Path(model) / "config.cfg"
    if not config_path.is_file():
        return {}
    import spacy

    config = spacy.util.load_config(config_path, interpolate=True)
    components = config["components"]
    summary: Dict = {"components": list(config["nlp"]["pipeline"])}
    if "transformer" in components:
        trf = components["transformer"]["model"]
        summary["transformer"] = {k: v for k, v in trf.items() if not isinstance(v, dict)}
        encoder_config = Path(str(trf.get("name"))) / "config.json"
        if encoder_config.is_file():
            shape = json.loads(encoder_config.read_text())
            summary["encoder"] = {
                k: shape[k] for k in ("model_type", "num_hidden_layers", "hidden_size", "embedding_size") if k in shape
            }
    if "srl" in components:
        summary["srl"] = {k: v for k, v in components["srl"]["model"].items() if not isinstance(v, dict)}
    return summary


def markdown_report(output: Path, result: Dict, rows: List[tuple], header: tuple) -> str:
    """The table as Markdown under a header: benchmark, date, machine, corpus, precision(s), pipelines."""
    info = result.get("machine", {})
    lines = [f"# {output.stem}", "", f"- date: {info.get('date', date.today().isoformat())}"]
    lines.append("- machine: " + ", ".join(f"{key} {value}" for key, value in info.items() if key != "date"))
    for key in ("corpus", "precision", "precisions", "scale"):
        if key in result:
            lines.append(f"- {key}: {result[key]}")
    for model, summary in result["pipelines"].items():
        parts = [", ".join(summary.get("components", []))]
        for section in ("encoder", "transformer", "srl"):
            if section in summary:
                parts.append(f"{section}: " + ", ".join(f"{k} {v}" for k, v in summary[section].items()))
        lines.append(f"- pipeline `{model}`: " + "; ".join(p for p in parts if p))
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(gpu_id: int = -1) -> Dict:
    import torch

    info = {
        "date": date.today().isoformat(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if gpu_id >= 0:
        info.update(
            gpu=torch.cuda.get_device_name(gpu_id), gpu_id=gpu_id, torch=torch.__version__, cuda=torch.version.cuda
        )
    return info


def gpu_problem(gpu_id: int) -> Optional[str]:
    """Why GPU `gpu_id` cannot run spaCy here, or None if it can."""
    import torch
    from thinc.util import has_cupy_gpu

    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)"
    if gpu_id >= torch.cuda.device_count():
        return f"PyTorch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
    if not has_cupy_gpu:
        return "spaCy runs on GPUs through CuPy, which is not installed (pip install cupy-cuda12x, or the build for your CUDA)"
    return None


def check_gpu(gpu_id: int, precision: Optional[str] = None) -> None:
    """A benchmark command's --gpu-id (and --precision): fail at once, saying why, rather than in a child process."""
    problem = gpu_problem(gpu_id) if gpu_id >= 0 else None
    if problem:
        msg.fail(f"--gpu-id {gpu_id}: {problem}. Leave out --gpu-id to benchmark on the CPU.", exits=1)
    if precision is not None:
        try:
            check_precision(precision, gpu_id >= 0)
        except (ValueError, RuntimeError) as error:
            hint = " (fp16 is a GPU precision: add --gpu-id)" if precision == "fp16" and gpu_id < 0 else ""
            msg.fail(f"--precision: {error}{hint}", exits=1)


def use_gpu(gpu_id: int) -> bool:
    """Put this (child) process's spaCy and PyTorch work on GPU `gpu_id`; False for the CPU (-1)."""
    if gpu_id < 0:
        return False
    import spacy

    problem = gpu_problem(gpu_id)
    if problem:
        raise RuntimeError(f"--gpu-id {gpu_id}: {problem}")
    spacy.require_gpu(gpu_id)
    return True


def timed(run, on_gpu: bool):
    """run()'s result and seconds; on a GPU, once its queued kernels have finished."""
    import torch

    started = time.perf_counter()
    value = run()
    if on_gpu:
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


def timed_in_turn(
    passes: Dict[str, Callable[[], Any]], rounds: int, on_gpu: bool
) -> Tuple[List[Dict[str, float]], Dict[str, Any]]:
    """Each pass timed once a round, one after another in this process, the order rotating from
    round to round (two passes alternate), so a drift in the machine's speed lands on every side:
    each round's seconds by pass, and each pass's last result. Separate processes on these 2-core
    machines drew minutes 5-20% apart, more than several of the ratios measured here."""
    names, timings, results = list(passes), [], {}
    for i in range(rounds):
        seconds = {}
        for name in names[i % len(names) :] + names[: i % len(names)]:
            results[name], seconds[name] = timed(passes[name], on_gpu)
        timings.append(seconds)
    return timings, results


def gpu_memory(on_gpu: bool) -> Dict:
    """Peak GPU memory PyTorch allocated in this process (CuPy's arrays come from the same allocator under thinc)."""
    import torch

    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if on_gpu else {}


@app.command("pipe", hidden=True)
def pipe_child(model: str, store: Path, result: Path, batch_size: int = 32) -> None:
    """(internal) In-memory nlp.pipe over the store's texts: the baseline the Parquet path is held to."""
    import spacy

    texts = ds.dataset(store, format="parquet", partitioning="hive").to_table(columns=["text"])["text"].to_pylist()
    nlp = spacy.load(model)
    nlp.max_length = 2_000_001
    started = time.perf_counter()
    words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=batch_size))
    seconds = time.perf_counter() - started
    result.write_text(
        json.dumps({"docs": len(texts), "words": words, "seconds": seconds, "words_per_s": words / seconds})
    )


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
    from albert_srl.components.transformer import cpu_bf16_supported

    allowed = GPU_PRECISIONS if on_gpu else CPU_PRECISIONS
    if precision not in allowed:
        raise ValueError(
            f"precision on {'a GPU' if on_gpu else 'the CPU'} must be one of {', '.join(allowed)}, not {precision!r}"
        )
    if precision == "bf16" and not on_gpu and not cpu_bf16_supported():
        raise RuntimeError("this CPU has no bf16 support (AVX512-BF16 or AMX)")


def load_pipeline(model: str, precision: str = "as-trained", overrides: Optional[Dict] = None, on_gpu: bool = False):
    """A trained pipeline, as trained or with its encoder forced to fp32, bf16 autocast or int8
    (fp32, fp16 or bf16 on a GPU; `use_gpu` first), plus any other config `overrides`."""
    import spacy

    check_precision(precision, on_gpu)
    if precision == "as-trained":
        return spacy.load(model, config=overrides or {})
    return spacy.load(model, config={**precision_overrides(precision, on_gpu), **(overrides or {})})


def transformer_config(model: str) -> Dict:
    """The transformer model section of a trained pipeline's config (its encoder `name`, `get_spans`)."""
    import spacy

    return spacy.util.load_config(Path(model) / "config.cfg", interpolate=True)["components"]["transformer"]["model"]


def count_frames(docs) -> Dict:
    """Predicates and arguments a pipeline wrote (a random head's count says how much work its SRL head did)."""
    predicates = sum(len(doc.spans["srl_predicates"]) for doc in docs if "srl_predicates" in doc.spans)
    arguments = sum(len(doc.spans["srl_arguments"]) for doc in docs if "srl_arguments" in doc.spans)
    return {"predicates": predicates, "arguments": arguments}


@app.command("floor-child", hidden=True)
def floor_child(
    model: str,
    corpus: Path,
    result: Path,
    only: str = "",
    batch_size: int = 32,
    repeats: int = 2,
    precision: str = "as-trained",
    gold_structure: bool = False,
    gpu_id: int = -1,
) -> None:
    """(internal) words/s of the pipeline, or of the components in ONLY (comma-separated)."""
    from spacy.tokens import DocBin

    on_gpu = use_gpu(gpu_id)
    nlp = load_pipeline(model, precision, on_gpu=on_gpu)
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    if gold_structure:
        return gold_structure_child(nlp, refs, result, batch_size, repeats, on_gpu, with_srl=only != "transformer")
    texts = [doc.text for doc in refs]
    names = only.split(",") if only else nlp.pipe_names
    list(nlp.pipe(texts[:8]))  # warm up
    best = float("inf")
    with nlp.select_pipes(enable=names):
        for _ in range(repeats):
            docs, seconds = timed(lambda: list(nlp.pipe(texts, batch_size=batch_size)), on_gpu)
            best = min(best, seconds)
    words = sum(len(doc) for doc in docs)
    result.write_text(
        json.dumps(
            {
                "components": names,
                "precision": precision,
                "words": words,
                "seconds": best,
                "words_per_s": words / best,
                **count_frames(docs),
                **gpu_memory(on_gpu),
            }
        )
    )


@app.command("floor-interleaved-child", hidden=True)
def floor_interleaved_child(
    model: str,
    corpus: Path,
    result: Path,
    batch_size: int = 32,
    repeats: int = 5,
    precision: str = "as-trained",
    gold_structure: bool = False,
    gpu_id: int = -1,
) -> None:
    """(internal) The transformer alone and the whole pipeline timed in turn in one process, REPEATS
    rounds. Repeated runs on this machine vary by 5-10%, more than the SRL head may cost, so the ratio
    is taken within each round (the two passes seconds apart, their order alternating from round to
    round so a drift lands on both sides) and the median round's is reported."""
    from spacy.tokens import DocBin

    on_gpu = use_gpu(gpu_id)
    nlp = load_pipeline(model, precision, on_gpu=on_gpu)
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    texts = [doc.text for doc in refs]

    if gold_structure:  # both passes on the same gold docs: the head is all that differs
        passes = {
            "transformer alone": gold_structure_run(nlp, refs, batch_size, with_srl=False),
            "whole pipeline": gold_structure_run(nlp, refs, batch_size),
        }
        gold_structure_run(nlp, refs[:8], batch_size)()  # warm up
    else:

        def transformer_alone():
            with nlp.select_pipes(enable=["transformer"]):
                return list(nlp.pipe(texts, batch_size=batch_size))

        passes = {
            "transformer alone": transformer_alone,
            "whole pipeline": lambda: list(nlp.pipe(texts, batch_size=batch_size)),
        }
        list(nlp.pipe(texts[:8]))  # warm up
    rounds, results = timed_in_turn(passes, repeats, on_gpu)
    words = sum(len(doc) for doc in results["whole pipeline"])
    ratios = sorted(r["transformer alone"] / r["whole pipeline"] for r in rounds)
    best = {name: min(r[name] for r in rounds) for name in passes}
    # words as the whole pass counts them (gold tokens differ slightly from the tokenizer's): compare seconds
    result.write_text(
        json.dumps(
            {
                "precision": precision,
                "gold_structure": gold_structure,
                "repeats": repeats,
                "rounds": rounds,
                "round_ratios": ratios,
                "seconds": best,
                "best_of_ratio": best["transformer alone"] / best["whole pipeline"],
                "component_seconds": gold_component_seconds(nlp, refs, batch_size, on_gpu)
                if gold_structure
                else component_seconds(nlp, texts, batch_size, on_gpu),
                "words": words,
                "pipeline_vs_transformer": statistics.median(ratios),
            }
        )
    )


def component_seconds(nlp, texts: List[str], batch_size: int, on_gpu: bool) -> Dict[str, float]:
    """One pass as nlp.pipe makes it, batch by batch, with each step's seconds summed: where the
    whole pipeline's time goes, every share measured within the same seconds."""
    from spacy.util import minibatch

    totals = {"tokenizer": 0.0, **{name: 0.0 for name in nlp.pipe_names}}
    for batch in minibatch(texts, size=batch_size):
        docs, seconds = timed(lambda: [nlp.make_doc(text) for text in batch], on_gpu)
        totals["tokenizer"] += seconds
        for name, proc in nlp.pipeline:
            docs, seconds = timed(lambda: list(proc.pipe(docs, batch_size=batch_size)), on_gpu)
            totals[name] += seconds
    return totals


def gold_component_seconds(nlp, refs, batch_size: int, on_gpu: bool = False) -> Dict[str, float]:
    """One gold-structure pass, batch by batch, with the transformer's and the SRL head's seconds summed."""
    seconds: Dict[str, float] = {}
    gold_structure_run(nlp, refs, batch_size, seconds=seconds, on_gpu=on_gpu)()
    return seconds


def gold_structure_run(
    nlp, refs, batch_size: int, with_srl: bool = True, seconds: Optional[Dict[str, float]] = None, on_gpu: bool = False
):
    """A pass of the transformer and the SRL head (or, without `with_srl`, the transformer alone) over
    the corpus's own tokens, sentences and predicates. Both passes of a floor measured this way encode
    the same docs, so the head is all that differs. With `seconds`, each step's seconds are added to it
    batch by batch."""
    from spacy.tokens import Doc

    from albert_srl.components.frames import frame_specs

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


def gold_structure_child(
    nlp, refs, result: Path, batch_size: int, repeats: int, on_gpu: bool = False, with_srl: bool = True
) -> None:
    """The transformer and the SRL head (or the transformer alone) on the corpus's own tokens,
    sentences and predicates.

    For pipelines with random weights: their senter and predicate finder mark random sentences and
    predicates (a random albert-base marked 25,128 of EWT dev's 25,503 words as predicates, 5x the
    gold 4,977), and the head's work grows with both; given the gold ones it does what a trained
    pipeline does. The senter (under 1% of a trained pipeline's time) is left out."""
    run = gold_structure_run(nlp, refs[:8], batch_size, with_srl)
    run()  # warm up
    run = gold_structure_run(nlp, refs, batch_size, with_srl)
    best = float("inf")
    for _ in range(repeats):
        docs, seconds = timed(run, on_gpu)
        best = min(best, seconds)
    words = sum(len(doc) for doc in docs)
    components = ["transformer", "srl"] if with_srl else ["transformer"]
    result.write_text(
        json.dumps(
            {
                "components": components,
                "structure": "gold tokens, sentences and predicates",
                "words": words,
                "seconds": best,
                "words_per_s": words / best,
                **count_frames(docs),
                **gpu_memory(on_gpu),
            }
        )
    )


@app.command("floor")
def floor_benchmark(
    model: str = typer.Argument(..., help="Trained pipeline folder"),
    corpus: Path = typer.Argument(..., help="A .spacy corpus whose texts are annotated (e.g. corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="JSON file to write"),
    precision: str = typer.Option("as-trained", help=f"The encoder's precision: {', '.join(PRECISIONS)}"),
    gold_structure: bool = typer.Option(
        False,
        "--gold-structure",
        help="Run the SRL head on the corpus's own sentences and predicates (for pipelines with random weights)",
    ),
    random_head: Optional[Path] = typer.Option(
        None,
        help="Measure a random-weight pipeline of this config's shape on MODEL's encoder instead (implies --gold-structure): the cost of a head not yet trained",
    ),
    rounds: int = typer.Option(
        5,
        min=1,
        help="Rounds of the in-turn measurement (each times both passes; the median round's ratio is reported)",
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", help=GPU_HELP),
) -> None:
    """The whole pipeline (transformer + senter + srl) against the transformer alone: the floor of
    this design, since the encoder runs once per document and the rest reads its outputs."""
    check_gpu(gpu_id, precision)
    device = ["--gpu-id", str(gpu_id)]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        if random_head is not None:
            folder = Path(tmp) / "random-head"
            encoder = transformer_config(model)["name"]
            run_measured(
                [
                    sys.executable,
                    "-m",
                    "albert_srl.pipeline.benchmark",
                    "random-pipeline-child",
                    str(random_head),
                    str(corpus),
                    str(folder),
                    "--encoder",
                    encoder,
                ]
            )
            model, gold_structure = str(folder), True
        for name, only in (("transformer alone", "transformer"), ("whole pipeline", "")):
            msg.info(name)
            path = Path(tmp) / "r.json"
            flags = ["--gold-structure"] if gold_structure else []
            runs[name] = run_measured(
                [
                    sys.executable,
                    "-m",
                    "albert_srl.pipeline.benchmark",
                    "floor-child",
                    model,
                    str(corpus),
                    str(path),
                    "--only",
                    only,
                    "--precision",
                    precision,
                    *flags,
                    *device,
                ]
            )
            runs[name].update(json.loads(path.read_text()))
        msg.info("both in turn, one process (the ratio)")
        path = Path(tmp) / "r.json"
        flags = ["--gold-structure"] if gold_structure else []
        run_measured(
            [
                sys.executable,
                "-m",
                "albert_srl.pipeline.benchmark",
                "floor-interleaved-child",
                model,
                str(corpus),
                str(path),
                "--repeats",
                str(rounds),
                "--precision",
                precision,
                *flags,
                *device,
            ]
        )
        interleaved = json.loads(path.read_text())
    ratio = interleaved["pipeline_vs_transformer"]
    result = {
        "machine": machine(gpu_id),
        "model": model,
        "random_head": str(random_head) if random_head else None,
        "corpus": str(corpus),
        "precision": precision,
        "gold_structure": gold_structure,
        "runs": runs,
        "interleaved": interleaved,
        "pipeline_vs_transformer": ratio,
    }
    low, high = interleaved["round_ratios"][0], interleaved["round_ratios"][-1]
    shares = interleaved["component_seconds"]
    breakdown = (
        ("one pass, seconds by step: " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in shares.items()))
        if shares
        else ""
    )
    finding = f"whole pipeline / transformer alone, timed in turn in one process: {ratio:.3f} (median of {interleaved['repeats']} rounds, {low:.3f}-{high:.3f}); in separate processes: {runs['whole pipeline']['words_per_s'] / runs['transformer alone']['words_per_s']:.3f}"
    write_report(output, result, *run_rows(runs), findings=[finding] + ([breakdown] if breakdown else []))
    if breakdown:
        msg.text(breakdown)
    msg.good(f"{finding} -> {output}")


@app.command("annotate")
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
        python = sys.executable
        msg.info("in-memory nlp.pipe")
        pipe = run_measured(
            [
                python,
                "-m",
                "albert_srl.pipeline.benchmark",
                "pipe",
                model,
                str(small),
                str(tmp / "pipe.json"),
                "--batch-size",
                str(batch_size),
            ]
        )
        pipe.update(json.loads((tmp / "pipe.json").read_text()))
        runs = {}
        for name, store in (("1x", small), (f"{scale}x", large)):
            msg.info(f"annotate, {name} store")
            out = tmp / f"out-{name}"
            runs[name] = run_measured(
                [
                    python,
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
    finding = f"Parquet path / nlp.pipe words/s: {result['parquet_vs_pipe_words_per_s']:.3f}; peak RSS {scale}x / 1x: {result[f'peak_rss_{scale}x_vs_1x']:.3f}"
    write_report(output, result, rows, ("run", "words", "words/s", "peak RSS MB"), findings=[finding])
    msg.good(f"{finding} -> {output}")


@app.command("dask")
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


def per_predicate_pass(nlp, refs, batch_size: int = 32, on_gpu: bool = False):
    """The per-predicate design's encoder cost over REFS with NLP's encoder, at the pipeline's
    precision: a pass to time (warmed up), its words as the pipeline counts them, its number of
    encoder sequences."""
    import torch

    from albert_srl.components.frames import frame_specs
    from albert_srl.components.transformer import cpu_precision, gpu_precision, prepare_encoder, quantize_linear_int8

    trf = nlp.get_pipe("transformer").model
    prepare_encoder(trf)  # the pipeline's own swaps (fused GELU, fast WordPiece tokenizer), on both sides
    encoder, tokenizer = trf.transformer, trf.tokenizer
    # AllenNLP's SRL-BERT input: "[CLS] sentence [SEP] predicate [SEP]", one sequence per predicate;
    # gold sentences and predicates, length-sorted batches, no head or decoding: all in its favour
    pairs = [
        (sent.text, ref[f.head].text)
        for ref in refs
        for sent in ref.sents
        for f in frame_specs(ref)
        if sent.start <= f.head < sent.end
    ]
    pairs.sort(key=lambda pair: len(pair[0]))
    words = sum(len(nlp.make_doc(ref.text)) for ref in refs)  # counted as the pipeline counts them
    if on_gpu:  # the pipeline's CUDA autocast, as its config asks (precision_overrides)
        precision = gpu_precision(trf)
        autocast = torch.autocast(
            "cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16, enabled=precision != "fp32"
        )
    else:  # the same precision as the pipeline's transformer (albert_srl.TransformerModel.v1: bf16 or int8 on CPUs)
        precision = cpu_precision(trf)
        if precision == "int8":
            encoder = quantize_linear_int8(encoder)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    device = next(encoder.parameters()).device

    def encode(batch):
        inputs = tokenizer(
            [s for s, _ in batch],
            [p for _, p in batch],
            padding=True,
            truncation="only_first",
            max_length=512,
            return_tensors="pt",
        )
        with torch.no_grad(), autocast:
            encoder(**inputs.to(device))

    def encode_all():
        # thinc's PyTorchShim.predict puts the model back in train mode after each call, so a
        # pipeline pass in between would leave dropout on (30% slower on EWT dev)
        encoder.eval()
        for i in range(0, len(pairs), batch_size):
            encode(pairs[i : i + batch_size])

    encoder.eval()
    encode(pairs[:batch_size])  # warm up
    return encode_all, words, len(pairs)


@app.command("per-predicate-child", hidden=True)
def per_predicate_child(
    model: str, corpus: Path, result: Path, batch_size: int = 32, precision: str = "as-trained", gpu_id: int = -1
) -> None:
    """(internal) The per-predicate design's encoder cost: one forward pass per predicate."""
    from spacy.tokens import DocBin

    on_gpu = use_gpu(gpu_id)
    nlp = load_pipeline(model, precision, on_gpu=on_gpu)
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    encode_all, words, sequences = per_predicate_pass(nlp, refs, batch_size, on_gpu)
    _, seconds = timed(encode_all, on_gpu)
    result.write_text(
        json.dumps(
            {
                "precision": precision,
                "sequences": sequences,
                "docs": len(refs),
                "words": words,
                "seconds": seconds,
                "words_per_s": words / seconds,
                **gpu_memory(on_gpu),
            }
        )
    )


@app.command("per-predicate-interleaved-child", hidden=True)
def per_predicate_interleaved_child(
    model: str,
    corpus: Path,
    result: Path,
    rounds: int = 5,
    batch_size: int = 32,
    precision: str = "as-trained",
    gold_structure: bool = False,
    gpu_id: int = -1,
) -> None:
    """(internal) The whole pipeline and the per-predicate passes timed in turn in one process,
    ROUNDS rounds, the order alternating; the median round's speedup is reported (separate
    processes drew per-predicate runs 13% apart on this machine)."""
    from spacy.tokens import DocBin

    on_gpu = use_gpu(gpu_id)
    nlp = load_pipeline(model, precision, on_gpu=on_gpu)
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    texts = [doc.text for doc in refs]
    per_predicate, words, sequences = per_predicate_pass(nlp, refs, batch_size, on_gpu)
    if gold_structure:
        gold_structure_run(nlp, refs[:8], batch_size)()  # warm up
        ours = gold_structure_run(nlp, refs, batch_size)
    else:
        list(nlp.pipe(texts[:8]))  # warm up
        ours = lambda: list(nlp.pipe(texts, batch_size=batch_size))  # noqa: E731
    passes = {"this pipeline": ours, "per-predicate": per_predicate}
    timings, _ = timed_in_turn(passes, rounds, on_gpu)
    # both count the pipeline's words, so the speedup is a ratio of seconds
    speedups = sorted(r["per-predicate"] / r["this pipeline"] for r in timings)
    result.write_text(
        json.dumps(
            {
                "precision": precision,
                "gold_structure": gold_structure,
                "rounds": timings,
                "words": words,
                "sequences": sequences,
                "round_speedups": speedups,
                "speedup": statistics.median(speedups),
            }
        )
    )


@app.command("per-predicate")
def per_predicate_benchmark(
    model: str = typer.Argument(..., help="Trained pipeline folder"),
    corpus: Path = typer.Argument(..., help="A .spacy corpus with gold frames (corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="JSON file to write"),
    precision: str = typer.Option("as-trained", help=f"The encoder's precision on both sides: {', '.join(PRECISIONS)}"),
    rounds: int = typer.Option(
        5,
        min=1,
        help="Rounds of the in-turn measurement (each times both designs; the median round's speedup is reported)",
    ),
    gold_structure: bool = typer.Option(
        False,
        "--gold-structure",
        help="Run this pipeline's SRL head on the corpus's own sentences and predicates, as the per-predicate side does (for pipelines with random weights)",
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", help=GPU_HELP),
) -> None:
    """This design (the encoder once per document, the whole pipeline) against the per-predicate
    design (AllenNLP SRL-BERT, transformer-srl: one encoder pass per predicate), same encoder and texts."""
    check_gpu(gpu_id, precision)
    flags = ["--precision", precision, "--gpu-id", str(gpu_id)]
    our_flags = [
        *flags,
        *(["--gold-structure"] if gold_structure else []),
    ]  # the per-predicate side always gets the gold sentences and predicates
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        for name, command in (
            ("this pipeline (encoder once per document)", ["floor-child", model, str(corpus), str(path), *our_flags]),
            ("per-predicate encoder passes", ["per-predicate-child", model, str(corpus), str(path), *flags]),
        ):
            msg.info(name)
            runs[name] = run_measured([sys.executable, "-m", "albert_srl.pipeline.benchmark", *command])
            runs[name].update(json.loads(path.read_text()))
        msg.info(f"both in turn, one process, {rounds} rounds (the ratio)")
        run_measured(
            [
                sys.executable,
                "-m",
                "albert_srl.pipeline.benchmark",
                "per-predicate-interleaved-child",
                model,
                str(corpus),
                str(path),
                "--rounds",
                str(rounds),
                *our_flags,
            ]
        )
        interleaved = json.loads(path.read_text())
    ours, theirs = runs.values()
    # seconds over the same documents: gold-structure passes count the corpus's tokens, not the tokenizer's
    separate = theirs["seconds"] / ours["seconds"]
    ratio = interleaved["speedup"]
    result = {
        "machine": machine(gpu_id),
        "model": model,
        "corpus": str(corpus),
        "precision": precision,
        "gold_structure": gold_structure,
        "runs": runs,
        "interleaved": interleaved,
        "speedup_separate_runs": separate,
        "speedup_vs_per_predicate": ratio,
    }
    low, high = interleaved["round_speedups"][0], interleaved["round_speedups"][-1]
    finding = f"this pipeline / per-predicate design, timed in turn in one process: {ratio:.2f}x (median of {rounds} rounds, {low:.2f}-{high:.2f}); in separate processes: {separate:.2f}x ({theirs['sequences']:,} encoder sequences for {theirs['docs']:,} documents)"
    write_report(output, result, *run_rows(runs), findings=[finding])
    msg.good(f"{finding} -> {output}")


TRF_REFERENCE_CONFIG = """
[nlp]
lang = "en"
pipeline = ["transformer","tagger","parser","ner"]

[components]

[components.transformer]
factory = "transformer"
max_batch_items = 4096

[components.transformer.model]
@architectures = "spacy-transformers.TransformerModel.v3"
name = null
mixed_precision = false

[components.transformer.model.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 128
stride = 96

[components.transformer.model.tokenizer_config]
use_fast = true

[components.tagger]
factory = "tagger"

[components.tagger.model]
@architectures = "spacy.Tagger.v2"
nO = null

[components.tagger.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "transformer"

[components.tagger.model.tok2vec.pooling]
@layers = "reduce_mean.v1"

[components.parser]
factory = "parser"

[components.parser.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "parser"
extra_state_tokens = false
hidden_width = 64
maxout_pieces = 2
use_upper = false

[components.parser.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "transformer"

[components.parser.model.tok2vec.pooling]
@layers = "reduce_mean.v1"

[components.ner]
factory = "ner"

[components.ner.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "ner"
extra_state_tokens = false
hidden_width = 64
maxout_pieces = 2
use_upper = false

[components.ner.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "transformer"

[components.ner.model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""
DEP_LABELS = "ROOT acl acomp advcl advmod agent amod appos attr aux auxpass case cc ccomp compound conj csubj dative dep det dobj expl intj mark meta neg nmod npadvmod nsubj nsubjpass nummod oprd parataxis pcomp pobj poss preconj predet prep prt punct quantmod relcl xcomp".split()
ENT_LABELS = "CARDINAL DATE EVENT FAC GPE LANGUAGE LAW LOC MONEY NORP ORDINAL ORG PERCENT PERSON PRODUCT QUANTITY TIME WORK_OF_ART".split()


def build_roberta_reference(folder: Path, texts: List[str]) -> Path:
    """A random roberta-base (12 x 768, 50,265 pieces) with a byte-level BPE of 8,000 pieces trained
    on `texts` (speed does not depend on the weights; a smaller BPE makes a few more pieces per word,
    which if anything slows this reference down a little)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False
    )
    bpe.save_model(str(folder))
    RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt")).save_pretrained(
        folder
    )
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=50265)).save_pretrained(folder)
    return folder


def reference_pipeline(refs, folder: Path, precision: str = "fp32", on_gpu: bool = False):
    """The en_core_web_trf-shaped pipeline (roberta-base + tagger, parser, ner, random weights) in
    FOLDER, its labels set up from REFS, at PRECISION ("shipped": spacy-transformers' own
    TransformerModel.v3, fp32, as en_core_web_trf runs it), warmed up."""
    import spacy
    from spacy.training import Example
    from thinc.api import Config

    texts = [doc.text for doc in refs]
    build_roberta_reference(folder, texts)
    config = Config().from_str(TRF_REFERENCE_CONFIG)
    config["components"]["transformer"]["model"]["name"] = str(folder)
    if precision != "shipped":
        check_precision(precision, on_gpu)
        for key, value in precision_overrides(precision, on_gpu).items():
            config["components"]["transformer"]["model"][key.rsplit(".", 1)[1]] = value
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    for label in DEP_LABELS:
        nlp.get_pipe("parser").add_label(label)
    for label in ENT_LABELS:
        nlp.get_pipe("ner").add_label(label)
    tags = sorted({t.tag_ for doc in refs for t in doc if t.tag_})
    for tag in tags:
        nlp.get_pipe("tagger").add_label(tag)
    sample = refs[0][:8].as_doc()
    examples = [
        Example.from_dict(
            nlp.make_doc(sample.text),
            {
                "words": [t.text for t in sample],
                "tags": [t.tag_ or (tags[0] if tags else "X") for t in sample],
                "heads": [0] * len(sample),
                "deps": ["ROOT"] + ["dep"] * (len(sample) - 1),
            },
        )
    ]
    nlp.initialize(lambda: examples)
    list(nlp.pipe(texts[:8]))  # warm up
    return nlp


@app.command("trf-reference-child", hidden=True)
def trf_reference_child(
    corpus: Path, result: Path, batch_size: int = 32, repeats: int = 2, precision: str = "fp32", gpu_id: int = -1
) -> None:
    """(internal) words/s of an en_core_web_trf-shaped pipeline: roberta-base + tagger, parser, ner."""
    import spacy
    from spacy.tokens import DocBin

    on_gpu = use_gpu(gpu_id)
    refs = list(DocBin().from_disk(corpus).get_docs(spacy.blank("en").vocab))
    texts = [doc.text for doc in refs]
    with tempfile.TemporaryDirectory() as tmp:
        nlp = reference_pipeline(refs, Path(tmp) / "roberta-base-random", precision, on_gpu)
        best = float("inf")
        for _ in range(repeats):
            words, seconds = timed(lambda: sum(len(doc) for doc in nlp.pipe(texts, batch_size=batch_size)), on_gpu)
            best = min(best, seconds)
    result.write_text(
        json.dumps(
            {
                "components": nlp.pipe_names,
                "precision": precision,
                "words": words,
                "seconds": best,
                "words_per_s": words / best,
                **gpu_memory(on_gpu),
            }
        )
    )


REFERENCE = "reference"


@app.command("trf-reference-interleaved-child", hidden=True)
def trf_reference_interleaved_child(
    corpus: Path,
    result: Path,
    model: List[str] = typer.Option([], "--model"),
    gold_structure_model: List[str] = typer.Option([], "--gold-structure-model"),
    rounds: int = 3,
    batch_size: int = 32,
    precision: str = "fp32",
    gpu_id: int = -1,
) -> None:
    """(internal) The reference and each SRL pipeline timed in turn in one process, ROUNDS rounds,
    the order rotating from round to round. Separate processes on this machine drew minutes up to
    20% apart, so each pipeline's ratio to the reference is taken within a round and the median
    round's is reported. Peak RSS is not separable here: the separate runs report it."""
    import spacy
    from spacy.tokens import DocBin

    on_gpu = use_gpu(gpu_id)
    refs = list(DocBin().from_disk(corpus).get_docs(spacy.blank("en").vocab))
    texts = [doc.text for doc in refs]
    with tempfile.TemporaryDirectory() as tmp:
        reference = reference_pipeline(refs, Path(tmp) / "roberta-base-random", precision, on_gpu)
        passes = {REFERENCE: lambda: list(reference.pipe(texts, batch_size=batch_size))}
        for name in model:
            nlp = load_pipeline(name, precision, on_gpu=on_gpu)
            list(nlp.pipe(texts[:8]))  # warm up
            passes[name] = lambda nlp=nlp: list(nlp.pipe(texts, batch_size=batch_size))
        for name in gold_structure_model:
            nlp = load_pipeline(name, precision, on_gpu=on_gpu)
            srl_refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
            gold_structure_run(nlp, srl_refs[:8], batch_size)()  # warm up
            passes[name] = gold_structure_run(nlp, srl_refs, batch_size)
        timings, results = timed_in_turn(passes, rounds, on_gpu)
        words = {name: sum(len(doc) for doc in docs) for name, docs in results.items()}
    # words/s, not seconds: the gold-structure passes count the corpus's tokens, not the tokenizer's
    ratios = {
        name: sorted((words[name] / r[name]) / (words[REFERENCE] / r[REFERENCE]) for r in timings)
        for name in passes
        if name != REFERENCE
    }
    result.write_text(
        json.dumps(
            {
                "precision": precision,
                "rounds": timings,
                "words": words,
                "vs_reference": {
                    name: {
                        "median": statistics.median(values),
                        "low": values[0],
                        "high": values[-1],
                        "round_ratios": values,
                    }
                    for name, values in ratios.items()
                },
            }
        )
    )


@app.command("random-pipeline")
@app.command("random-pipeline-child", hidden=True)  # the name the benchmarks and older README sections use
def random_pipeline_child(
    config_path: Path = typer.Argument(
        ..., help="The pipeline's config (configs/srl_trf_gpu.cfg: albert-base-v2's shape)"
    ),
    corpus: Path = typer.Argument(
        ..., help="A .spacy corpus with frames: its first N_DOCS documents set up the labels"
    ),
    output: Path = typer.Argument(..., help="Folder to write the pipeline to"),
    spm: Optional[Path] = typer.Option(
        None, help="SentencePiece model for a random albert-base-v2 encoder, written beside OUTPUT"
    ),
    encoder: Optional[Path] = typer.Option(None, help="An encoder folder to use instead of a random albert-base-v2"),
    n_docs: int = typer.Option(50, min=1, help="Documents whose labels the head is built for"),
) -> None:
    """An SRL pipeline of CONFIG_PATH's shape with random weights, for timing a shape not yet trained
    (speed does not depend on the weights; time it with --gold-structure, since a random senter and
    predicate finder mark random sentences and predicates)."""
    if encoder is None and spm is None:
        msg.fail(
            "Give --spm (a SentencePiece model, for a random albert-base-v2) or --encoder (an encoder folder)", exits=1
        )
    import spacy
    from spacy.tokens import DocBin
    from spacy.training import Example

    from albert_srl.pipeline.encoder import build_random_albert

    if encoder is None:
        encoder = build_random_albert(output.parent / "albert-base-random", spm, shape="base")
    overrides = {
        "paths.encoder": str(encoder),
        "components.transformer.model.mixed_precision": False,
        **precision_overrides("fp32"),
    }
    nlp = spacy.util.load_model_from_config(
        spacy.util.load_config(config_path, overrides=overrides, interpolate=True), auto_fill=True, validate=True
    )
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    examples = [Example(nlp.make_doc(ref.text), ref) for ref in refs[:n_docs]]
    nlp.initialize(lambda: examples)
    nlp.to_disk(output)


@app.command("trf-reference")
def trf_reference_benchmark(
    corpus: Path = typer.Argument(..., help="A .spacy corpus whose texts are annotated (corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="JSON file to write"),
    model: List[str] = typer.Option(
        [], "--model", help="SRL pipelines to compare (repeat); each is named by its folder"
    ),
    albert_base_config: Optional[Path] = typer.Option(
        None,
        help="Also measure a random SRL pipeline of this config's shape (configs/srl_trf_gpu.cfg: albert-base-v2); needs --spm",
    ),
    spm: Optional[Path] = typer.Option(None, help="ALBERT's SentencePiece model, for --albert-base-config"),
    precisions: str = typer.Option(
        "fp32,bf16,int8",
        help="Comma-separated encoder precisions (fp32, bf16, int8); every pipeline, the reference included, runs at each; bf16 is skipped on CPUs without it",
    ),
    shipped_reference: bool = typer.Option(
        True,
        help="Also time the reference as en_core_web_trf runs it (spacy-transformers' TransformerModel.v3, fp32, one padded batch), without this project's speed options",
    ),
    rounds: int = typer.Option(
        3,
        min=0,
        help="Rounds of the in-turn measurement at each precision: every pipeline and the reference timed one after another in one process, the ratio taken within each round (`vs_reference_in_turn`, the median round's); 0: separate processes only",
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", help=GPU_HELP + "; --precisions then takes fp32, fp16, bf16"),
) -> None:
    """SRL pipelines against a roberta-base-shaped spaCy transformer pipeline (the architecture of
    en_core_web_trf: roberta-base + tagger, parser, ner; random weights) on the same texts. Each
    ratio is taken at the same encoder precision, the reference given this project's transformer
    speed options too (`vs_reference`: the architectures compared), and against the reference as
    shipped (`vs_shipped_reference`: what a user switching pipelines sees)."""
    from albert_srl.components.transformer import cpu_bf16_supported

    check_gpu(gpu_id)
    allowed = [p for p in (GPU_PRECISIONS if gpu_id >= 0 else CPU_PRECISIONS) if p != "as-trained"]
    wanted = [p for p in precisions.split(",") if p]
    if not wanted or any(p not in allowed for p in wanted):
        msg.fail(
            f"--precisions takes {', '.join(allowed)} {'on a GPU' if gpu_id >= 0 else 'on the CPU'}, not {precisions!r}",
            exits=1,
        )
    if albert_base_config is not None and spm is None:
        msg.fail("--albert-base-config needs --spm (ALBERT's SentencePiece model)", exits=1)
    device = ["--gpu-id", str(gpu_id)]
    if gpu_id < 0 and "bf16" in wanted and not cpu_bf16_supported():
        msg.warn("This CPU has no bf16 support (AVX512-BF16 or AMX): bf16 is not measured")
        wanted = [p for p in wanted if p != "bf16"] or ["fp32"]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        models = {f"SRL pipeline {m}": (m, []) for m in model}
        if albert_base_config is not None:
            folder = Path(tmp) / "albert-base-srl"
            msg.info(f"Building a random SRL pipeline of {albert_base_config}'s shape")
            run_measured(
                [
                    sys.executable,
                    "-m",
                    "albert_srl.pipeline.benchmark",
                    "random-pipeline-child",
                    str(albert_base_config),
                    str(corpus),
                    str(folder),
                    "--spm",
                    str(spm),
                ]
            )
            # random senter and predicate finder: measured on the corpus's own sentences and predicates
            models[
                f"SRL pipeline, albert-base-v2 shape ({albert_base_config.name}), random weights, gold sentences and predicates"
            ] = (str(folder), ["--gold-structure"])
        for precision in wanted:
            commands = {
                "roberta-base + tagger, parser, ner (en_core_web_trf shape)": [
                    "trf-reference-child",
                    str(corpus),
                    str(path),
                    "--precision",
                    precision,
                    *device,
                ]
            }
            commands.update(
                {
                    name: ["floor-child", m, str(corpus), str(path), "--precision", precision, *flags, *device]
                    for name, (m, flags) in models.items()
                }
            )
            for name, command in commands.items():
                msg.info(f"{name}, {precision}")
                run = run_measured([sys.executable, "-m", "albert_srl.pipeline.benchmark", *command])
                run.update(json.loads(path.read_text()))
                runs[f"{name} [{precision}]"] = run
            reference = runs[f"{next(iter(commands))} [{precision}]"]
            for name in commands:
                runs[f"{name} [{precision}]"]["vs_reference"] = (
                    runs[f"{name} [{precision}]"]["words_per_s"] / reference["words_per_s"]
                )
            if rounds and models:
                msg.info(f"all in turn, one process, {rounds} rounds, {precision}")
                flags = [
                    arg
                    for m, extra in models.values()
                    for arg in (("--gold-structure-model" if extra else "--model"), m)
                ]
                run_measured(
                    [
                        sys.executable,
                        "-m",
                        "albert_srl.pipeline.benchmark",
                        "trf-reference-interleaved-child",
                        str(corpus),
                        str(path),
                        *flags,
                        "--rounds",
                        str(rounds),
                        "--precision",
                        precision,
                        *device,
                    ]
                )
                in_turn = json.loads(path.read_text())
                for name, (m, _) in models.items():
                    runs[f"{name} [{precision}]"]["vs_reference_in_turn"] = in_turn["vs_reference"][m]
                    runs[f"{name} [{precision}]"]["rounds_in_turn"] = [
                        {"seconds": r[m], "reference_seconds": r[REFERENCE]} for r in in_turn["rounds"]
                    ]
        if shipped_reference:
            name = "roberta-base + tagger, parser, ner, as shipped (spacy-transformers TransformerModel.v3) [fp32]"
            msg.info(name)
            runs[name] = run_measured(
                [
                    sys.executable,
                    "-m",
                    "albert_srl.pipeline.benchmark",
                    "trf-reference-child",
                    str(corpus),
                    str(path),
                    "--precision",
                    "shipped",
                    *device,
                ]
            )
            runs[name].update(json.loads(path.read_text()))
            runs[name]["vs_reference"] = None
            for run in runs.values():
                run["vs_shipped_reference"] = run["words_per_s"] / runs[name]["words_per_s"]
    import spacy
    from spacy.tokens import DocBin

    # a random head's predicate count against the corpus's: how much work its SRL head did
    gold = count_frames(DocBin().from_disk(corpus).get_docs(spacy.blank("en").vocab))
    result = {
        "machine": machine(gpu_id),
        "corpus": str(corpus),
        "precisions": wanted,
        "gold_frames": gold,
        "runs": runs,
    }

    def ratio(value):
        return "-" if value is None else f"{value:.2f}x"

    def in_turn(value):
        return "-" if value is None else f"{value['median']:.2f}x ({value['low']:.2f}-{value['high']:.2f})"

    rows = [
        (
            n,
            f"{r['words']:,}",
            f"{r['words_per_s']:,.0f}",
            ratio(r["vs_reference"]),
            in_turn(r.get("vs_reference_in_turn")),
            ratio(r.get("vs_shipped_reference")),
            f"{r.get('predicates', '-'):,}" if "predicates" in r else "-",
            f"{r['peak_rss_mb']:,.0f}",
        )
        for n, r in runs.items()
    ]
    write_report(
        output,
        result,
        rows,
        (
            "run",
            "words",
            "words/s",
            "vs reference",
            "vs reference in turn (median, range)",
            "vs shipped reference",
            "predicates",
            "peak RSS MB",
        ),
        models=list(model),
        findings=[f"{gold['predicates']:,} gold predicates in {corpus}"],
    )
    msg.good(f"{gold['predicates']:,} gold predicates in {corpus} -> {output}")


SPEED_OPTIONS = ("fp32", "bf16", "bf16-lstm", "int8", "length-buckets", "length-sorted", "no-overlap")


def load_with_option(model: str, option: str):
    """The pipeline with one speed option on a plain fp32 baseline: neither bf16 nor int8, each
    batch's windows padded to its longest as spacy-transformers pads them. length-buckets: windows
    run in groups of similar length (`bucket_tokens`); length-sorted: batches of documents of similar
    length; no-overlap: the transformer's windows follow each other (stride = window) instead of
    overlapping, so each token is encoded once; bf16-lstm: the SRL head's BiLSTM under bf16 autocast
    (the encoder stays fp32)."""
    from albert_srl.components.transformer import BUCKET_TOKENS, cpu_bf16_supported

    if option == "bf16-lstm" and not cpu_bf16_supported():
        raise RuntimeError("this CPU has no bf16 support (AVX512-BF16 or AMX)")
    overrides = {
        "components.transformer.model.bucket_tokens": BUCKET_TOKENS if option == "length-buckets" else 0,
        "components.srl.cpu_bf16": option == "bf16-lstm",
    }
    if option == "no-overlap":
        overrides["components.transformer.model.get_spans.stride"] = transformer_config(model)["get_spans"]["window"]
    return load_pipeline(model, option if option in ("bf16", "int8") else "fp32", overrides)


@app.command("option-child", hidden=True)
def option_child(model: str, corpus: Path, result: Path, option: str, batch_size: int = 32) -> None:
    """(internal) Evaluate the pipeline with one speed option: SRL scores and words/s."""
    from spacy.tokens import DocBin

    from albert_srl.pipeline.evaluate import evaluate

    nlp = load_with_option(model, option)
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    if option == "length-sorted":
        # batches of documents of similar length: less padding in the encoder's windows
        order = sorted(range(len(refs)), key=lambda i: len(refs[i]))
        scores, _ = evaluate(nlp, [refs[i] for i in order], batch_size)
    else:
        scores, _ = evaluate(nlp, refs, batch_size)
    keep = ("srl_f", "srl_e2e_f", "srl_pred_f", "srl_sense_acc", "words", "words_per_second")
    result.write_text(json.dumps({**{k: scores[k] for k in keep}, "gold_predicates_f": scores["gold_predicates"]["f"]}))


@app.command("options")
def options_benchmark(
    model: str = typer.Argument(..., help="Trained pipeline folder"),
    corpus: Path = typer.Argument(..., help="A .spacy corpus with gold frames (corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="JSON file to write"),
    options: str = typer.Option(
        ",".join(SPEED_OPTIONS), help=f"Comma-separated options among {', '.join(SPEED_OPTIONS)}"
    ),
    max_f1_cost: float = typer.Option(
        0.3, help="An option that costs at most this much srl_f (points) is recommended as a default"
    ),
    min_speedup: float = typer.Option(
        1.05, help="... if it is at least this much faster (repeated runs here vary by ~5-10%)"
    ),
) -> None:
    """Speed options that should keep accuracy, each in its own process on the same texts: words/s of
    the whole pipeline (predicted predicates), peak RSS and the change in SRL F1 against fp32."""
    runs = {}
    unknown = [o for o in options.split(",") if o not in SPEED_OPTIONS]
    if unknown or "fp32" not in options.split(","):
        msg.fail(
            f"Options must be among {', '.join(SPEED_OPTIONS)} and include fp32 (the baseline); got {options!r}",
            exits=1,
        )
    with tempfile.TemporaryDirectory() as tmp:
        for option in options.split(","):
            msg.info(option)
            path = Path(tmp) / "r.json"
            try:
                runs[option] = run_measured(
                    [
                        sys.executable,
                        "-m",
                        "albert_srl.pipeline.benchmark",
                        "option-child",
                        model,
                        str(corpus),
                        str(path),
                        option,
                    ]
                )
            except RuntimeError as err:
                msg.warn(f"{option} did not run: {str(err)[-300:]}")
                continue
            runs[option].update(json.loads(path.read_text()))
    base = runs.get("fp32")
    if base is None:
        msg.fail("The fp32 baseline did not run", exits=1)
    for option, r in runs.items():
        r["speedup"] = r["words_per_second"] / base["words_per_second"]
        r["srl_f_change"] = 100 * (r["srl_f"] - base["srl_f"])
        r["recommended_default"] = (
            option != "fp32" and r["speedup"] >= min_speedup and r["srl_f_change"] >= -max_f1_cost
        )
    result = {"machine": machine(), "model": model, "corpus": str(corpus), "runs": runs}
    rows = [
        (
            o,
            f"{r['words_per_second']:,.0f}",
            f"{r['speedup']:.2f}x",
            f"{100 * r['srl_f']:.2f}",
            f"{r['srl_f_change']:+.2f}",
            f"{r['peak_rss_mb']:,.0f}",
            "yes" if r["recommended_default"] else "",
        )
        for o, r in runs.items()
    ]
    write_report(
        output, result, rows, ("option", "words/s", "speed-up", "srl_f", "F1 change", "peak RSS MB", "default?")
    )
    msg.good(f"-> {output}")


if __name__ == "__main__":
    app()
