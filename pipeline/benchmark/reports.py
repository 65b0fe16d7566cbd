"""A benchmark's results: its JSON, and a Markdown table beside it under a header naming the date,
the machine and the pipelines measured."""

import json
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import spacy
from wasabi import msg


def run_rows(runs: Dict) -> Tuple[List[tuple], tuple]:
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
