"""`per-predicate`: this design (the encoder once per document) against the per-predicate design
(AllenNLP SRL-BERT, transformer-srl: one encoder pass per predicate), same encoder and texts."""

import json
import statistics
import tempfile
from pathlib import Path
from typing import Callable, List, Tuple

import torch
import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from wasabi import msg

from albert_srl.components.frames import frame_specs
from albert_srl.components.transformer import cpu_precision, gpu_precision, prepare_encoder, quantize_linear_int8
from albert_srl.pipeline.benchmark.harness import gpu_memory, run_child, timed, timed_in_turn
from albert_srl.pipeline.benchmark.machine import check_gpu, machine, use_gpu
from albert_srl.pipeline.benchmark.pipelines import GPU_HELP, PRECISIONS, gold_structure_run, load_pipeline
from albert_srl.pipeline.benchmark.reports import run_rows, write_report


def per_predicate_pass(
    nlp: Language, refs: List[Doc], batch_size: int = 32, on_gpu: bool = False
) -> Tuple[Callable[[], None], int, int]:
    """The per-predicate design's encoder cost over REFS with NLP's encoder, at the pipeline's
    precision: a pass to time (warmed up), its words as the pipeline counts them, its number of
    encoder sequences."""
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
        # pipeline pass in between would leave dropout on
        encoder.eval()
        for i in range(0, len(pairs), batch_size):
            encode(pairs[i : i + batch_size])

    encoder.eval()
    encode(pairs[:batch_size])  # warm up
    return encode_all, words, len(pairs)


def per_predicate_child(
    model: str, corpus: Path, result: Path, batch_size: int = 32, precision: str = "as-trained", gpu_id: int = -1
) -> None:
    """(internal) The per-predicate design's encoder cost: one forward pass per predicate."""
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
    ROUNDS rounds, the order alternating; the median round's speedup is reported (per-predicate runs
    in separate processes vary more from run to run)."""
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
        help=(
            "Run this pipeline's SRL head on the corpus's own sentences and predicates, as the per-predicate "
            "side does (for pipelines with random weights)"
        ),
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", help=GPU_HELP),
) -> None:
    """This design (the encoder once per document, the whole pipeline) against the per-predicate
    design (AllenNLP SRL-BERT, transformer-srl: one encoder pass per predicate), same encoder and texts."""
    check_gpu(gpu_id, precision)
    flags = ["--precision", precision, "--gpu-id", str(gpu_id)]
    # the per-predicate side always gets the gold sentences and predicates
    our_flags = [*flags, *(["--gold-structure"] if gold_structure else [])]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        for name, command in (
            ("this pipeline (encoder once per document)", ["floor-child", model, str(corpus), str(path), *our_flags]),
            ("per-predicate encoder passes", ["per-predicate-child", model, str(corpus), str(path), *flags]),
        ):
            msg.info(name)
            runs[name] = run_child(*command)
            runs[name].update(json.loads(path.read_text()))
        msg.info(f"both in turn, one process, {rounds} rounds (the ratio)")
        run_child("per-predicate-interleaved-child", model, str(corpus), str(path), "--rounds", str(rounds), *our_flags)
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
    finding = (
        f"this pipeline / per-predicate design, timed in turn in one process: {ratio:.2f}x "
        f"(median of {rounds} rounds, {low:.2f}-{high:.2f}); in separate processes: {separate:.2f}x "
        f"({theirs['sequences']:,} encoder sequences for {theirs['docs']:,} documents)"
    )
    write_report(output, result, *run_rows(runs), findings=[finding])
    msg.good(f"{finding} -> {output}")
