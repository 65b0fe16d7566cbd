"""`trf-reference`: SRL pipelines against a roberta-base-shaped spaCy transformer pipeline (the
architecture of en_core_web_trf, random weights) on the same texts, at each encoder precision."""

import json
import statistics
import tempfile
from pathlib import Path
from typing import List, Optional

import spacy
import typer
from spacy.tokens import DocBin
from wasabi import msg

from albert_srl.components.transformer import cpu_bf16_supported
from albert_srl.pipeline.benchmark.harness import gpu_memory, run_child, timed, timed_in_turn
from albert_srl.pipeline.benchmark.machine import check_gpu, machine, use_gpu
from albert_srl.pipeline.benchmark.pipelines import (
    CPU_PRECISIONS,
    GPU_HELP,
    GPU_PRECISIONS,
    count_frames,
    gold_structure_run,
    load_pipeline,
)
from albert_srl.pipeline.benchmark.reference import reference_pipeline
from albert_srl.pipeline.benchmark.reports import write_report

REFERENCE = "reference"


def trf_reference_child(
    corpus: Path, result: Path, batch_size: int = 32, repeats: int = 2, precision: str = "fp32", gpu_id: int = -1
) -> None:
    """(internal) words/s of an en_core_web_trf-shaped pipeline: roberta-base + tagger, parser, ner."""
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
    the order rotating from round to round. Timings in separate processes vary more from run to run,
    so each pipeline's ratio to the reference is taken within a round and the median round's is
    reported. Peak RSS is not separable here: the separate runs report it."""
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


def trf_reference_benchmark(
    corpus: Path = typer.Argument(..., help="A .spacy corpus whose texts are annotated (corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="JSON file to write"),
    model: List[str] = typer.Option(
        [], "--model", help="SRL pipelines to compare (repeat); each is named by its folder"
    ),
    albert_base_config: Optional[Path] = typer.Option(
        None,
        help=(
            "Also measure a random SRL pipeline of this config's shape (configs/srl_trf_gpu.cfg: albert-base-v2); "
            "needs --spm"
        ),
    ),
    spm: Optional[Path] = typer.Option(None, help="ALBERT's SentencePiece model, for --albert-base-config"),
    precisions: str = typer.Option(
        "fp32,bf16,int8",
        help=(
            "Comma-separated encoder precisions (fp32, bf16, int8); every pipeline, the reference included, "
            "runs at each; bf16 is skipped on CPUs without it"
        ),
    ),
    shipped_reference: bool = typer.Option(
        True,
        help=(
            "Also time the reference as en_core_web_trf runs it (spacy-transformers' TransformerModel.v3, fp32, "
            "one padded batch), without this project's speed options"
        ),
    ),
    rounds: int = typer.Option(
        3,
        min=0,
        help=(
            "Rounds of the in-turn measurement at each precision: every pipeline and the reference timed one "
            "after another in one process, the ratio taken within each round (`vs_reference_in_turn`, the "
            "median round's); 0: separate processes only"
        ),
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", help=GPU_HELP + "; --precisions then takes fp32, fp16, bf16"),
) -> None:
    """SRL pipelines against a roberta-base-shaped spaCy transformer pipeline (the architecture of
    en_core_web_trf: roberta-base + tagger, parser, ner; random weights) on the same texts. Each
    ratio is taken at the same encoder precision, the reference given this project's transformer
    speed options too (`vs_reference`: the architectures compared), and against the reference as
    shipped (`vs_shipped_reference`: what a user switching pipelines sees)."""
    check_gpu(gpu_id)
    allowed = [p for p in (GPU_PRECISIONS if gpu_id >= 0 else CPU_PRECISIONS) if p != "as-trained"]
    wanted = [p for p in precisions.split(",") if p]
    if not wanted or any(p not in allowed for p in wanted):
        where = "on a GPU" if gpu_id >= 0 else "on the CPU"
        msg.fail(f"--precisions takes {', '.join(allowed)} {where}, not {precisions!r}", exits=1)
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
            run_child("random-pipeline", str(albert_base_config), str(corpus), str(folder), "--spm", str(spm))
            # random senter and predicate finder: measured on the corpus's own sentences and predicates
            name = (
                f"SRL pipeline, albert-base-v2 shape ({albert_base_config.name}), random weights, "
                "gold sentences and predicates"
            )
            models[name] = (str(folder), ["--gold-structure"])
        for precision in wanted:
            reference_name = "roberta-base + tagger, parser, ner (en_core_web_trf shape)"
            commands = {
                reference_name: ["trf-reference-child", str(corpus), str(path), "--precision", precision, *device]
            }
            commands.update(
                {
                    name: ["floor-child", m, str(corpus), str(path), "--precision", precision, *flags, *device]
                    for name, (m, flags) in models.items()
                }
            )
            for name, command in commands.items():
                msg.info(f"{name}, {precision}")
                run = run_child(*command)
                run.update(json.loads(path.read_text()))
                runs[f"{name} [{precision}]"] = run
            reference = runs[f"{reference_name} [{precision}]"]
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
                run_child(
                    "trf-reference-interleaved-child",
                    str(corpus),
                    str(path),
                    *flags,
                    "--rounds",
                    str(rounds),
                    "--precision",
                    precision,
                    *device,
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
            runs[name] = run_child("trf-reference-child", str(corpus), str(path), "--precision", "shipped", *device)
            runs[name].update(json.loads(path.read_text()))
            runs[name]["vs_reference"] = None
            for run in runs.values():
                run["vs_shipped_reference"] = run["words_per_s"] / runs[name]["words_per_s"]
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
