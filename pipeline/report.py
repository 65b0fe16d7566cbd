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

import html
import io
import json
import random
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import typer
from wasabi import msg

from albert_srl.components.frames import FrameSpec, frame_specs
from albert_srl.components.scoring import SRLCounts, join_continuations, prf

ARG_LENGTH_BUCKETS = [(1, 1), (2, 2), (3, 4), (5, 7), (8, 12), (13, 10**6)]
SENT_LENGTH_BUCKETS = [(1, 10), (11, 20), (21, 30), (31, 40), (41, 10**6)]
NONE = "(none)"
OTHER = "(other)"  # roles outside the table's most frequent ones
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
table{border-collapse:collapse;margin:.8rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.meta{color:#666}.grid{display:flex;flex-wrap:wrap;gap:1.5rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem;border-top:1px solid #eee;padding:.5rem 0}
.pair h4{margin:.2rem 0;color:#666;font-weight:normal}.plot svg{max-width:100%;height:auto}
"""


def bucket_name(bucket: Tuple[int, int]) -> str:
    low, high = bucket
    return str(low) if low == high else f"{low}+" if high >= 10**6 else f"{low}-{high}"


def bucket_of(n: int, buckets) -> Tuple[int, int]:
    return next((b for b in buckets if b[0] <= n <= b[1]), buckets[0])


# ---------------------------------------------------------------------------------------------
# Analyses of gold vs predicted frames (same tokens)


def argument_sets(frame: Optional[FrameSpec]) -> Dict[Tuple, str]:
    """Scored arguments of a frame, keyed by their pieces: {pieces: role}."""
    if frame is None:
        return {}
    return {pieces: role for role, pieces in join_continuations(frame.arguments)}


def paired_frames(gold_docs, pred_docs):
    """(gold doc, gold frame, predicted frame or None) for every gold predicate, and spurious ones."""
    for gold_doc, pred_doc in zip(gold_docs, pred_docs):
        gold = {f.head: f for f in frame_specs(gold_doc)}
        pred = {f.head: f for f in frame_specs(pred_doc)}
        for head, frame in gold.items():
            yield gold_doc, frame, pred.get(head)
        for head, frame in pred.items():
            if head not in gold:
                yield gold_doc, None, frame


def role_confusions(gold_docs, pred_docs) -> Counter:
    """(gold role, predicted role) counts over argument spans; (none) where one side has no argument."""
    counts: Counter = Counter()
    for _, gold, pred in paired_frames(gold_docs, pred_docs):
        if gold is None:
            continue  # the CoNLL scorer ignores spurious predicates; so do the confusions
        g, p = argument_sets(gold), argument_sets(pred)
        for pieces in set(g) | set(p):
            counts[(g.get(pieces, NONE), p.get(pieces, NONE))] += 1
    return counts


def f1_by_argument_length(gold_docs, pred_docs) -> Dict[str, Dict[str, float]]:
    """P/R/F1 of arguments by their length in tokens (a missed one counts at its gold length)."""
    counts: Dict[Tuple[int, int], Counter] = defaultdict(Counter)
    for _, gold, pred in paired_frames(gold_docs, pred_docs):
        if gold is None:
            continue
        g, p = argument_sets(gold), argument_sets(pred)
        for pieces in set(g) | set(p):
            length = sum(end - start for start, end in pieces)
            bucket = bucket_of(length, ARG_LENGTH_BUCKETS)
            if pieces in g and pieces in p and g[pieces] == p[pieces]:
                counts[bucket]["ok"] += 1
            else:
                counts[bucket]["missed"] += int(pieces in g)
                counts[bucket]["excess"] += int(pieces in p)
    return {
        bucket_name(b): {
            **prf(counts[b]["ok"], counts[b]["excess"], counts[b]["missed"]),
            "support": counts[b]["ok"] + counts[b]["missed"],
        }
        for b in ARG_LENGTH_BUCKETS
        if counts[b]
    }


def f1_by_sentence_length(gold_docs, pred_docs) -> Dict[str, Dict[str, float]]:
    """Argument P/R/F1 (CoNLL semantics) by the length of the gold sentence holding the predicate."""
    counts: Dict[Tuple[int, int], SRLCounts] = defaultdict(SRLCounts)
    for gold_doc, pred_doc in zip(gold_docs, pred_docs):
        gold, pred = frame_specs(gold_doc), frame_specs(pred_doc)
        sentences = list(gold_doc.sents) if gold_doc.has_annotation("SENT_START") else [gold_doc[:]]
        for sent in sentences:
            inside = lambda frames: [f for f in frames if sent.start <= f.head < sent.end]  # noqa: E731
            counts[bucket_of(len(sent), SENT_LENGTH_BUCKETS)].add(inside(gold), inside(pred))
    result = {}
    for bucket in SENT_LENGTH_BUCKETS:
        if bucket in counts:
            s = counts[bucket].scores()
            result[bucket_name(bucket)] = {
                "p": s["srl_p"],
                "r": s["srl_r"],
                "f": s["srl_f"],
                "support": s["srl_counts"]["ok"] + s["srl_counts"]["missed"],
            }
    return result


# ---------------------------------------------------------------------------------------------
# Rendering


def esc(value) -> str:
    return html.escape(str(value))


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence], left: int = 1) -> str:
    """An HTML table; the first `left` columns are left-aligned (labels)."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{esc(c)}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def svg_plot(draw, width: float = 6.0, height: float = 3.2) -> str:
    """Run `draw(ax)` on a matplotlib figure and return it as inline SVG (text as paths: no fonts needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "path", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(width, height))
        draw(ax)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        plt.close(fig)
    svg = buffer.getvalue()
    return '<div class="plot">' + svg[svg.index("<svg") :] + "</div>"


def bar_plot(
    labels: Sequence[str], series: Dict[str, Sequence[float]], title: str, ylabel: str = "F1", horizontal: bool = False
) -> str:
    def draw(ax):
        n = len(series)
        width = 0.8 / max(n, 1)
        for k, (name, values) in enumerate(series.items()):
            positions = [i + (k - (n - 1) / 2) * width for i in range(len(labels))]
            if horizontal:
                ax.barh(positions, values, height=width, label=name)
            else:
                ax.bar(positions, values, width=width, label=name)
        if horizontal:
            ax.set_yticks(range(len(labels)), labels)
            ax.invert_yaxis()
            ax.set_xlabel(ylabel)
        else:
            ax.set_xticks(
                range(len(labels)),
                labels,
                rotation=30 if max(map(len, labels), default=0) > 8 else 0,
                ha="right" if max(map(len, labels), default=0) > 8 else "center",
            )
            ax.set_ylabel(ylabel)
        ax.set_title(title)
        if n > 1:
            ax.legend(frameon=False)

    return svg_plot(draw, height=max(3.2, 0.22 * len(labels)) if horizontal else 3.2)


def line_plot(labels: Sequence[str], series: Dict[str, Sequence[float]], title: str, xlabel: str) -> str:
    def draw(ax):
        for name, values in series.items():
            ax.plot(labels, values, marker="o", label=name)
        ax.set_ylim(0, 100)
        ax.set_ylabel("F1")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.legend(frameon=False)

    return svg_plot(draw)


def confusion_table(counts: Counter, top: int = 12) -> str:
    """Gold roles (rows) by predicted roles (columns) for the most frequent roles, shaded by row share."""
    support = Counter()
    for (gold, _), n in counts.items():
        if gold != NONE:
            support[gold] += n
    roles = [r for r, _ in support.most_common(top)]
    columns = roles + [OTHER, NONE]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows = []
    for gold in roles + [NONE]:
        row = Counter()
        for (g, p), n in counts.items():
            if g == gold:
                row[p if p in roles or p == NONE else OTHER] += n
        total = sum(row.values()) or 1
        cells = []
        for pred in columns:
            n = row[pred]
            share = n / total
            color = f"rgba(34,120,200,{share:.2f})" if gold != pred else f"rgba(40,160,80,{share:.2f})"
            cells.append(f'<td style="background:{color}">{n if n else ""}</td>')
        rows.append(f'<tr><th class="l">{esc(gold)}</th>{"".join(cells)}</tr>')
    return f'<table><tr><th class="l">gold \\ predicted</th>{head}</tr>{"".join(rows)}</table>'


def frame_doc(sent, frame: FrameSpec):
    """The sentence as its own Doc with one frame's predicate and arguments as spans (for displaCy)."""
    from spacy.tokens import Span

    doc = sent.as_doc()
    start = sent.start
    spans = [Span(doc, frame.predicate[0] - start, frame.predicate[1] - start, label=f"V {frame.sense}")]
    for role, a0, a1 in frame.arguments:
        a0, a1 = max(a0, start) - start, min(a1, sent.end) - start
        if a0 < a1:
            spans.append(Span(doc, a0, a1, label=role))
    doc.spans["sc"] = spans
    return doc


def render_frame(sent, frame: Optional[FrameSpec]) -> str:
    from spacy import displacy

    if frame is None:
        return "<p><em>not found</em></p>"
    return displacy.render(frame_doc(sent, frame), style="span", page=False, jupyter=False)


def sample_sentences(gold_docs, pred_docs, n: int, seed: int = 0):
    """Up to n sentences of 8-30 tokens with two or more gold predicates, picked at random (fixed seed)."""
    candidates = []
    for gold_doc, pred_doc in zip(gold_docs, pred_docs):
        if not gold_doc.has_annotation("SENT_START"):
            continue
        gold, pred = frame_specs(gold_doc), frame_specs(pred_doc)
        for sent in gold_doc.sents:
            own = [f for f in gold if sent.start <= f.head < sent.end]
            if 8 <= len(sent) <= 30 and len(own) >= 2:
                candidates.append((sent, own, {f.head: f for f in pred if sent.start <= f.head < sent.end}))
    random.Random(seed).shuffle(candidates)
    return candidates[:n]


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
    import spacy
    from spacy.tokens import DocBin

    metrics = json.loads(metrics_path.read_text(encoding="utf8"))
    name = metrics_path.stem
    g = metrics["gold_predicates"]
    out = [
        f'<h2 id="{esc(name)}">Evaluation: {esc(name)}</h2>',
        f'<p class="meta">model {esc(metrics.get("model"))} · data {esc(metrics.get("data"))} · {esc(metrics.get("date"))} · {metrics.get("words", 0):,} words at {metrics.get("words_per_second", 0):,.0f} words/s</p>',
    ]
    out.append(
        table(
            ["", "P", "R", "F1"],
            [
                (
                    "arguments, predicted predicates (srl_f)",
                    pct(metrics["srl_p"]),
                    pct(metrics["srl_r"]),
                    pct(metrics["srl_f"]),
                ),
                (
                    "arguments, end to end",
                    pct(metrics["srl_e2e_p"]),
                    pct(metrics["srl_e2e_r"]),
                    pct(metrics["srl_e2e_f"]),
                ),
                ("arguments, gold predicates", pct(g["p"]), pct(g["r"]), pct(g["f"])),
                (
                    "predicate identification",
                    pct(metrics["srl_pred_p"]),
                    pct(metrics["srl_pred_r"]),
                    pct(metrics["srl_pred_f"]),
                ),
            ],
        )
    )
    out.append(
        f"<p>Sense accuracy {pct(metrics['srl_sense_acc'])}; sentence-boundary F1 {pct(metrics.get('sents_f', 0.0))}.</p>"
    )
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
            "<h3>Role confusions (gold predicates; argument spans)</h3><p>Rows: gold role of a span; columns: the role predicted for the same span. (none): no argument with that span on that side.</p>"
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
            f"<p>No predicted Docs at {esc(pred_path)} or no corpus at {esc(data)}: run <code>evaluate</code> again for confusions, length plots and examples.</p>"
        )
    return "".join(out), {"name": name, "srl_f": metrics["srl_f"], **analyses}


def read_table(folder: Path, table: str):
    """One table of an annotate output: the files of the parts its manifest records as finished."""
    import pandas as pd

    from albert_srl.pipeline.store import Manifest, Part

    names = Manifest(folder).data.get("parts", {})
    files = [p for p in (Part("", name, 0, 0).output_path(folder, table) for name in names) if p.exists()]
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True) if files else pd.DataFrame()


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
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>albert-srl report</title><style>{CSS}</style></head><body>'
        f'<h1>albert-srl report</h1><p class="meta">Written {now} by <code>python -m albert_srl.pipeline.report</code>. '
        "Scores follow the CoNLL-2005 scorer's semantics (README, Scoring).</p>" + "".join(sections) + "</body></html>"
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
        rows.append(("annotations (arguments/, predicates/, documents/, errors/)", str(annotations)))
    return rows


def main(
    output: Path = typer.Argument(..., help="HTML file to write (reports/report.html)"),
    eval: List[Path] = typer.Option(
        [], "--eval", help="A metrics JSON written by evaluate (metrics/ewt-dev.json); repeat for several"
    ),
    annotations: Optional[Path] = typer.Option(
        None,
        help="An annotate output folder (annotations/ewt-test); left out of the report, with a note, if it does not exist",
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
            f"No annotation run at {annotations}: the report covers the evaluations only (spacy project run annotate adds it)"
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
