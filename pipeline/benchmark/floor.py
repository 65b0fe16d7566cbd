"""`floor`: the whole pipeline against the transformer alone. The encoder runs once per document and
the rest reads its outputs, so the transformer alone is the floor of this design."""

import json
import statistics
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.util import minibatch
from wasabi import msg

from albert_srl.pipeline.benchmark.harness import gpu_memory, run_child, timed, timed_in_turn
from albert_srl.pipeline.benchmark.machine import check_gpu, machine, use_gpu
from albert_srl.pipeline.benchmark.pipelines import (
    GPU_HELP,
    PRECISIONS,
    count_frames,
    gold_structure_run,
    load_pipeline,
    transformer_config,
)
from albert_srl.pipeline.benchmark.reports import run_rows, write_report


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


def gold_structure_child(
    nlp: Language,
    refs: List[Doc],
    result: Path,
    batch_size: int,
    repeats: int,
    on_gpu: bool = False,
    with_srl: bool = True,
) -> None:
    """The transformer and the SRL head (or the transformer alone) on the corpus's own tokens,
    sentences and predicates.

    For pipelines with random weights: their senter and predicate finder mark random sentences and
    predicates (a random predicate finder marks most words as predicates, several times the gold
    ones), and the head's work grows with both; given the gold ones it does what a trained pipeline
    does. The senter (under 1% of a trained pipeline's time) is left out."""
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
    rounds. Repeated runs vary by more than the SRL head may cost, so the ratio is taken within each
    round (the two passes seconds apart, their order alternating from round to round so a drift lands
    on both sides) and the median round's is reported."""
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


def component_seconds(nlp: Language, texts: List[str], batch_size: int, on_gpu: bool) -> Dict[str, float]:
    """One pass as nlp.pipe makes it, batch by batch, with each step's seconds summed: where the
    whole pipeline's time goes, every share measured within the same seconds."""
    totals = {"tokenizer": 0.0, **{name: 0.0 for name in nlp.pipe_names}}
    for batch in minibatch(texts, size=batch_size):
        docs, seconds = timed(lambda: [nlp.make_doc(text) for text in batch], on_gpu)
        totals["tokenizer"] += seconds
        for name, proc in nlp.pipeline:
            docs, seconds = timed(lambda: list(proc.pipe(docs, batch_size=batch_size)), on_gpu)
            totals[name] += seconds
    return totals


def gold_component_seconds(nlp: Language, refs: List[Doc], batch_size: int, on_gpu: bool = False) -> Dict[str, float]:
    """One gold-structure pass, batch by batch, with the transformer's and the SRL head's seconds summed."""
    seconds: Dict[str, float] = {}
    gold_structure_run(nlp, refs, batch_size, seconds=seconds, on_gpu=on_gpu)()
    return seconds


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
        help=(
            "Measure a random-weight pipeline of this config's shape on MODEL's encoder instead "
            "(implies --gold-structure): the cost of a head not yet trained"
        ),
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
            run_child("random-pipeline", str(random_head), str(corpus), str(folder), "--encoder", encoder)
            model, gold_structure = str(folder), True
        flags = ["--gold-structure"] if gold_structure else []
        path = Path(tmp) / "r.json"
        for name, only in (("transformer alone", "transformer"), ("whole pipeline", "")):
            msg.info(name)
            runs[name] = run_child(
                "floor-child", model, str(corpus), str(path), "--only", only, "--precision", precision, *flags, *device
            )
            runs[name].update(json.loads(path.read_text()))
        msg.info("both in turn, one process (the ratio)")
        run_child(
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
    separate = runs["whole pipeline"]["words_per_s"] / runs["transformer alone"]["words_per_s"]
    finding = (
        f"whole pipeline / transformer alone, timed in turn in one process: {ratio:.3f} "
        f"(median of {interleaved['repeats']} rounds, {low:.3f}-{high:.3f}); in separate processes: {separate:.3f}"
    )
    write_report(output, result, *run_rows(runs), findings=[finding] + ([breakdown] if breakdown else []))
    if breakdown:
        msg.text(breakdown)
    msg.good(f"{finding} -> {output}")
