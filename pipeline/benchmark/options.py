"""`options`: speed options that should keep accuracy (bf16, int8, length buckets, length-sorted
batches, windows without overlap), each against a plain fp32 baseline: words/s and SRL F1 change."""

import json
import tempfile
from pathlib import Path

import typer
from spacy.language import Language
from spacy.tokens import DocBin
from wasabi import msg

from albert_srl.components.transformer import BUCKET_TOKENS, cpu_bf16_supported
from albert_srl.pipeline.benchmark.harness import run_child
from albert_srl.pipeline.benchmark.machine import machine
from albert_srl.pipeline.benchmark.pipelines import load_pipeline, transformer_config
from albert_srl.pipeline.benchmark.reports import write_report
from albert_srl.pipeline.evaluate import evaluate

SPEED_OPTIONS = ("fp32", "bf16", "bf16-lstm", "int8", "length-buckets", "length-sorted", "no-overlap")


def load_with_option(model: str, option: str) -> Language:
    """The pipeline with one speed option on a plain fp32 baseline: neither bf16 nor int8, each
    batch's windows padded to its longest as spacy-transformers pads them. length-buckets: windows
    run in groups of similar length (`bucket_tokens`); length-sorted: batches of documents of similar
    length; no-overlap: the transformer's windows follow each other (stride = window) instead of
    overlapping, so each token is encoded once; bf16-lstm: the SRL head's BiLSTM under bf16 autocast
    (the encoder stays fp32)."""
    if option == "bf16-lstm" and not cpu_bf16_supported():
        raise RuntimeError("this CPU has no bf16 support (AVX512-BF16 or AMX)")
    overrides = {
        "components.transformer.model.bucket_tokens": BUCKET_TOKENS if option == "length-buckets" else 0,
        "components.srl.cpu_bf16": option == "bf16-lstm",
    }
    if option == "no-overlap":
        overrides["components.transformer.model.get_spans.stride"] = transformer_config(model)["get_spans"]["window"]
    return load_pipeline(model, option if option in ("bf16", "int8") else "fp32", overrides)


def option_child(model: str, corpus: Path, result: Path, option: str, batch_size: int = 32) -> None:
    """(internal) Evaluate the pipeline with one speed option: SRL scores and words/s."""
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
        1.05, help="... if it is at least this much faster (set it above the run-to-run spread of timings)"
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
                runs[option] = run_child("option-child", model, str(corpus), str(path), option)
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
