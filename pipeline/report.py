"""One self-contained HTML page of how the SRL pipeline does: evaluation, examples, annotation runs.

    python -m albert_srl.pipeline.report reports/report.html --eval metrics/ewt-dev.json \\
        --eval metrics/ewt-test.json --annotations annotations/ewt-test

Each `--eval` is a metrics JSON written by `evaluate`; the gold corpus it names and the predicted
Docs beside it (`<name>.pred.spacy`) give role confusions, F1 by argument and sentence length and
displaCy renderings of sample sentences (gold and predicted, one frame per predicate). An
`--annotations` folder (the output of `annotate`) adds documents, frames, top predicates and
senses, the role distribution and the errors. Plots are inline SVG (matplotlib); the page loads
nothing from the network.
"""

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import typer
from wasabi import msg

from albert_srl.pipeline.annotation import TABLES
from albert_srl.pipeline.evaluate import score_rows
from albert_srl.pipeline.report_analyses import (
    SENT_LENGTH_BUCKETS,
    bucket_name,
    f1_by_argument_length,
    f1_by_sentence_length,
    read_table,
    role_confusions,
    sample_sentences,
)
from albert_srl.pipeline.report_html import CSS, bar_plot, confusion_table, esc, line_plot, pct, render_frame, table


def examples_section(gold_docs, pred_docs, n: int) -> str:
    parts = []
    for sent, gold_frames, pred_by_head in sample_sentences(gold_docs, pred_docs, n):
        parts.append(f"<h3>{esc(sent.doc.user_data.get('doc_id', ''))}: “{esc(sent.text)}”</h3>")
        heads = sorted({f.head for f in gold_frames} | set(pred_by_head))
        gold_by_head = {f.head: f for f in gold_frames}
        for head in heads:
            parts.append(
                '<div class="pair"><div><h4>gold</h4>'
                + render_frame(sent, gold_by_head.get(head))
                + "</div>"
                + "<div><h4>predicted</h4>"
                + render_frame(sent, pred_by_head.get(head))
                + "</div></div>"
            )
    return "".join(parts) or "<p>No sentence with two or more predicates.</p>"


def evaluation_section(metrics_path: Path, samples: int) -> Tuple[str, Dict]:
    """One score file's section: headline scores, per role, by predicate type and genre, then what
    the predicted Docs beside it show (confusions, lengths, examples); with the analyses' figures."""
    metrics = json.loads(metrics_path.read_text(encoding="utf8"))
    name = metrics_path.stem
    out = [
        f'<h2 id="{esc(name)}">Evaluation: {esc(name)}</h2>',
        f'<p class="meta">model {esc(metrics.get("model"))} · data {esc(metrics.get("data"))} · '
        f"{esc(metrics.get('date'))} · {metrics.get('words', 0):,} words at "
        f"{metrics.get('words_per_second', 0):,.0f} words/s</p>",
        table(["", "P", "R", "F1"], [(label, *(pct(x) for x in prf)) for label, *prf in score_rows(metrics)]),
        f"<p>Sense accuracy {pct(metrics['srl_sense_acc'])}; "
        f"sentence-boundary F1 {pct(metrics.get('sents_f', 0.0))}.</p>",
        breakdown_tables(metrics),
    ]
    html, analyses = predicted_docs_section(metrics_path, metrics, samples)
    out.append(html)
    return "".join(out), {"name": name, "srl_f": metrics["srl_f"], **analyses}


def breakdown_tables(metrics: Dict) -> str:
    """Scores per role, by predicate type and by genre."""
    out = []
    roles = sorted(metrics["srl_per_role"].items(), key=lambda kv: -kv[1]["support"])
    out.append("<h3>Per role</h3>")
    out.append(
        '<div class="grid">'
        + table(
            ["role", "P", "R", "F1", "support"],
            [(r, pct(v["p"]), pct(v["r"]), pct(v["f"]), v["support"]) for r, v in roles],
        )
        + bar_plot(
            [r for r, _ in roles[:20]],
            {"F1": [100 * v["f"] for _, v in roles[:20]]},
            "F1 of the 20 most frequent roles",
            "F1",
            horizontal=True,
        )
        + "</div>"
    )
    types = metrics["srl_per_predicate_type"]
    pred_types = metrics.get("srl_pred_per_type", {})
    out.append("<h3>By predicate type</h3>")
    out.append(
        table(
            ["type", "argument F1", "predicate identification F1"],
            [(t, pct(types[t]["f"]), pct(pred_types.get(t, {}).get("f", 0.0))) for t in types],
        )
    )
    genres = metrics.get("by_genre", {})
    if genres:
        out.append("<h3>By genre</h3>")
        out.append(
            '<div class="grid">'
            + table(
                ["genre", "srl_f", "predicate F1", "sense acc."],
                [(k, pct(v["srl_f"]), pct(v["srl_pred_f"]), pct(v["srl_sense_acc"])) for k, v in genres.items()],
            )
            + bar_plot(
                list(genres),
                {
                    "arguments (srl_f)": [100 * v["srl_f"] for v in genres.values()],
                    "predicates": [100 * v["srl_pred_f"] for v in genres.values()],
                },
                "F1 by genre",
            )
            + "</div>"
        )
    return "".join(out)


def predicted_docs_section(metrics_path: Path, metrics: Dict, samples: int) -> Tuple[str, Dict]:
    """Role confusions, F1 by argument and sentence length and sample sentences, from the predicted
    Docs `evaluate` wrote beside the score file and the corpus it names."""
    import spacy
    from spacy.tokens import DocBin

    out = []
    pred_path = metrics_path.with_suffix(".pred.spacy")
    data = Path(metrics["data"]) if metrics.get("data") else None
    analyses: Dict = {}
    if pred_path.exists() and data is not None and data.is_file():
        vocab = spacy.blank("en").vocab
        gold_docs = list(DocBin().from_disk(data).get_docs(vocab))
        pred_docs = list(DocBin().from_disk(pred_path).get_docs(vocab))
        if len(gold_docs) > len(pred_docs):  # evaluate --limit scored the first documents only
            gold_docs = gold_docs[: len(pred_docs)]
        analyses = {
            "by_argument_length": f1_by_argument_length(gold_docs, pred_docs),
            "by_sentence_length": f1_by_sentence_length(gold_docs, pred_docs),
        }
        out.append(
            "<h3>Role confusions (gold predicates; argument spans)</h3><p>Rows: gold role of a span; "
            "columns: the role predicted for the same span. (none): no argument with that span on that side.</p>"
        )
        out.append(confusion_table(role_confusions(gold_docs, pred_docs)))
        out.append("<h3>By argument and sentence length</h3>")
        by_arg, by_sent = analyses["by_argument_length"], analyses["by_sentence_length"]
        out.append(
            '<div class="grid">'
            + line_plot(
                list(by_arg),
                {"F1": [100 * v["f"] for v in by_arg.values()]},
                "Argument F1 by argument length",
                "tokens in the argument",
            )
            + line_plot(
                list(by_sent),
                {"F1": [100 * v["f"] for v in by_sent.values()]},
                "Argument F1 by sentence length",
                "tokens in the sentence",
            )
            + "</div>"
        )
        out.append(
            table(["argument length", "F1", "support"], [(k, pct(v["f"]), v["support"]) for k, v in by_arg.items()])
        )
        out.append(
            f"<h3>Sample sentences: gold and predicted frames</h3>{examples_section(gold_docs, pred_docs, samples)}"
        )
    else:
        out.append(
            f"<p>No predicted Docs at {esc(pred_path)} or no corpus at {esc(data)}: run <code>evaluate</code> "
            "again for confusions, length plots and examples.</p>"
        )
    return "".join(out), analyses


def annotation_section(folder: Path) -> str:
    documents, predicates = read_table(folder, "documents"), read_table(folder, "predicates")
    arguments, errors = read_table(folder, "arguments"), read_table(folder, "errors")
    if documents.empty:
        return f"<h2>Annotation run</h2><p>No documents table under {esc(folder)}.</p>"
    out = [f'<h2 id="annotations">Annotation run: {esc(folder)}</h2>']
    status = documents["status"].value_counts()
    out.append(
        table(
            ["", "count"],
            [
                ("documents", len(documents)),
                *[(f"status {k}", v) for k, v in status.items()],
                ("sentences", int(documents["sentences"].sum())),
                ("frames (predicates)", len(predicates)),
                ("arguments", len(arguments)),
                ("errors", len(errors)),
            ],
        )
    )
    if not predicates.empty:
        lemmas = predicates["pred_lemma"].value_counts().head(15)
        senses = predicates["pred_sense"].value_counts().head(15)
        out.append(
            '<div class="grid">'
            + bar_plot(list(lemmas.index), {"frames": list(lemmas.values)}, "Top predicates", "frames", horizontal=True)
            + bar_plot(list(senses.index), {"frames": list(senses.values)}, "Top senses", "frames", horizontal=True)
            + "</div>"
        )
        out.append(table(["type", "frames"], list(predicates["pred_type"].value_counts().items())))
    if not arguments.empty:
        roles = arguments["role"].value_counts().head(20)
        out.append(
            bar_plot(
                list(roles.index), {"arguments": list(roles.values)}, "Role distribution", "arguments", horizontal=True
            )
        )
    if not errors.empty:
        out.append(
            f"<h3>Errors ({len(errors)})</h3>"
            + table(
                ["doc_id", "part", "row", "reason"],
                errors[["doc_id", "part", "row", "reason"]].head(50).itertuples(index=False),
                left=4,
            )
        )
    return "".join(out)


def write_report(output: Path, evals: Sequence[Path], annotations: Optional[Path], samples: int = 8) -> Dict:
    sections, summary = [], []
    for path in evals:
        body, info = evaluation_section(path, samples)
        sections.append(body)
        summary.append(info)
    if len(summary) > 1 and all("by_sentence_length" in s for s in summary):
        labels = [
            bucket_name(b)
            for b in SENT_LENGTH_BUCKETS
            if any(bucket_name(b) in s["by_sentence_length"] for s in summary)
        ]
        sections.insert(
            0,
            "<h2>Overview</h2>"
            + line_plot(
                labels,
                {
                    s["name"]: [
                        100 * s["by_sentence_length"][k]["f"] if k in s["by_sentence_length"] else float("nan")
                        for k in labels
                    ]
                    for s in summary
                },
                "Argument F1 by sentence length",
                "tokens in the sentence",
            ),
        )
    if annotations is not None:
        sections.append(annotation_section(annotations))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>albert-srl report</title>'
        f"<style>{CSS}</style></head><body><h1>albert-srl report</h1>"
        f'<p class="meta">Written {now} by <code>python -m albert_srl.pipeline.report</code>. '
        "Scores follow the CoNLL-2005 scorer's semantics (docs/evaluation.md).</p>"
        + "".join(sections)
        + "</body></html>"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf8")
    return {"sections": len(sections), "bytes": len(page.encode("utf8"))}


def where_everything_is(output: Path, evals: Sequence[Path], annotations: Optional[Path]) -> List[Tuple[str, str]]:
    rows = [("report", str(output))]
    for path in evals:
        metrics = json.loads(path.read_text(encoding="utf8"))
        prefix = path.with_suffix("")
        rows += [
            (f"{path.stem}: pipeline", str(metrics.get("model"))),
            (f"{path.stem}: scores (srl_f {100 * metrics['srl_f']:.1f})", str(path)),
            (f"{path.stem}: CoNLL-2005 props", f"{prefix}.gold.props, {prefix}.pred.props"),
        ]
        encoder = Path(str(metrics.get("model"))).parent.parent / "encoder"
        if (encoder / "pretrain-metrics.json").exists():
            rows.append(("encoder (and its pretraining metrics)", str(encoder)))
    if annotations is not None and annotations.exists():
        rows.append((f"annotations ({', '.join(t + '/' for t in TABLES)})", str(annotations)))
    return rows


def main(
    output: Path = typer.Argument(..., help="HTML file to write (reports/report.html)"),
    eval: List[Path] = typer.Option(
        [], "--eval", help="A metrics JSON written by evaluate (metrics/ewt-dev.json); repeat for several"
    ),
    annotations: Optional[Path] = typer.Option(
        None,
        help="An annotate output folder (annotations/ewt-test); left out of the report, with a note, "
        "if it does not exist",
    ),
    samples: int = typer.Option(8, help="Sample sentences rendered per evaluation"),
    where: bool = typer.Option(
        False, "--where", help="Also print where the pipeline, scores, props files and annotations are"
    ),
):
    """Write one self-contained HTML report of evaluations and an annotation run."""
    for path in eval:
        if not path.exists():
            msg.fail(f"{path} not found", "Run `spacy project run evaluate` first.", exits=1)
    if annotations is not None and not annotations.exists():
        msg.info(
            f"No annotation run at {annotations}: the report covers the evaluations only "
            "(spacy project run annotate adds it)"
        )
        annotations = None
    if annotations is not None and not (annotations / "documents").exists():
        msg.fail(
            f"{annotations} is not an annotate output (no documents/ folder)",
            "Pass the OUTPUT folder of `annotate`, or leave --annotations out.",
            exits=1,
        )
    if not eval and annotations is None:
        msg.fail("Nothing to report: pass --eval metrics/ewt-dev.json and/or --annotations OUTPUT", exits=1)
    info = write_report(output, eval, annotations, samples)
    msg.good(f"Wrote {output} ({info['bytes'] / 1024:.0f} KB)")
    if where:
        msg.table(where_everything_is(output, eval, annotations), header=("what", "where"), divider=True)


if __name__ == "__main__":
    typer.run(main)
