"""The report's building blocks: HTML tables, inline SVG plots (matplotlib) and displaCy frame renderings."""

import html
import io
from collections import Counter
from typing import Dict, Optional, Sequence

from albert_srl.components.frames import FrameSpec
from albert_srl.pipeline.report_analyses import NONE

OTHER = "(other)"  # roles outside the table's most frequent ones
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;\
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
table{border-collapse:collapse;margin:.8rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.meta{color:#666}.grid{display:flex;flex-wrap:wrap;gap:1.5rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem;border-top:1px solid #eee;padding:.5rem 0}
.pair h4{margin:.2rem 0;color:#666;font-weight:normal}.plot svg{max-width:100%;height:auto}
"""


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
