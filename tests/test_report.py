"""The HTML report: analyses counted by hand, a page built end to end, and headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import spacy
import typer
from common import load_refs
from spacy.tokens import Doc
from typer.testing import CliRunner

from albert_srl.components.frames import FrameSpec, set_frames
from albert_srl.pipeline.report import f1_by_argument_length, f1_by_sentence_length, role_confusions

WORDS = "John gave Mary the book yesterday . She smiled .".split()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def doc_with(frames):
    nlp = spacy.blank("en")
    doc = Doc(nlp.vocab, words=WORDS, sent_starts=[True] + [False] * 6 + [True, False, False])
    set_frames(doc, frames)
    return doc


def test_analyses_match_counts_worked_out_by_hand():
    gold = doc_with(
        [
            FrameSpec(
                1, "give.01", (1, 2), "verbal", [("ARG0", 0, 1), ("ARG2", 2, 3), ("ARG1", 3, 5), ("ARGM-TMP", 5, 6)]
            ),
            FrameSpec(8, "smile.01", (8, 9), "verbal", [("ARG0", 7, 8)]),
        ]
    )
    pred = doc_with(
        [
            # ARG0 right, ARG2 labelled ARG1, "the book" missed, ARGM-TMP right, a spurious ARGM-LOC on "."
            FrameSpec(
                1, "give.01", (1, 2), "verbal", [("ARG0", 0, 1), ("ARG1", 2, 3), ("ARGM-TMP", 5, 6), ("ARGM-LOC", 6, 7)]
            ),
            # "smiled" missed entirely; a spurious predicate "book" (ignored, as the CoNLL scorer does)
            FrameSpec(4, "book.01", (4, 5), "nominal", [("ARG0", 3, 4)]),
        ]
    )
    confusions = role_confusions([gold], [pred])
    assert confusions == {
        ("ARG0", "ARG0"): 1,
        ("ARG2", "ARG1"): 1,
        ("ARG1", "(none)"): 1,
        ("ARGM-TMP", "ARGM-TMP"): 1,
        ("(none)", "ARGM-LOC"): 1,
        ("ARG0", "(none)"): 1,
    }
    by_length = f1_by_argument_length([gold], [pred])
    # one token: ok John, yesterday; missed Mary (wrong role), She; excess Mary as ARG1, "."
    assert (
        by_length["1"]["p"] == pytest.approx(2 / 4)
        and by_length["1"]["r"] == pytest.approx(2 / 4)
        and by_length["1"]["support"] == 4
    )
    assert by_length["2"] == {"p": 0.0, "r": 0.0, "f": 0.0, "support": 1}  # "the book", missed
    by_sentence = f1_by_sentence_length([gold], [pred])
    # sentence 1 (7 tokens): ok 2, excess 2, missed 2; sentence 2 (3 tokens): missed 1; both in 1-10
    assert by_sentence["1-10"]["p"] == pytest.approx(2 / 4) and by_sentence["1-10"]["r"] == pytest.approx(2 / 5)


@pytest.fixture(scope="module")
def report_inputs(tiny_pipeline, mini_corpus, tmp_path_factory):
    """metrics/dev.json (+ predicted Docs) from evaluate, and an annotate output over a small store."""
    import pandas as pd

    from albert_srl.pipeline.annotate import app as annotate_app
    from albert_srl.pipeline.evaluate import app as evaluate_app

    root = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(
        evaluate_app, [str(tiny_pipeline), str(mini_corpus / "train.spacy"), str(root / "metrics" / "dev.json")]
    )
    assert result.exit_code == 0, result.output
    texts = [ref.text for ref in load_refs(mini_corpus)] + ["", None]
    (root / "store").mkdir()
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(root / "store" / "part-0.parquet")
    result = CliRunner().invoke(
        annotate_app, [str(tiny_pipeline), str(root / "store"), str(root / "annotations"), "--no-fail-on-errors"]
    )
    assert result.exit_code == 0, result.output
    return root


def test_report_page(report_inputs):
    from albert_srl.pipeline.report import main

    app = typer.Typer()
    app.command()(main)
    out = report_inputs / "report.html"
    result = CliRunner().invoke(
        app,
        [
            str(out),
            "--eval",
            str(report_inputs / "metrics" / "dev.json"),
            "--annotations",
            str(report_inputs / "annotations"),
        ],
    )
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf8")
    for heading in (
        "Evaluation: dev",
        "Per role",
        "By predicate type",
        "By genre",
        "Role confusions",
        "By argument and sentence length",
        "Sample sentences",
        "Annotation run",
        "Top predicates",
        "Errors (1)",
    ):
        assert heading in page, heading
    assert page.count("<svg") >= 5  # role F1, genre, two length plots, annotation plots
    # displaCy span renderings, gold and predicted side by side, one frame (predicate and sense) each
    assert page.count("<h4>gold</h4>") == page.count("<h4>predicted</h4>") >= 2 and re.search(r"V [a-z_]+\.\d\d", page)
    metrics = json.loads((report_inputs / "metrics" / "dev.json").read_text())
    assert f"{100 * metrics['srl_f']:.1f}" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing from the network
    bad = CliRunner().invoke(app, [str(out), "--eval", str(report_inputs / "missing.json")])
    assert bad.exit_code == 1 and "not found" in bad.output


def chromium_load(page: Path, screenshot: Path, tmp_path: Path) -> str:
    """Load a page in headless Chromium, screenshot it; returns Chromium's log (console messages included)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
             "--hide-scrollbars", f"--screenshot={screenshot}", "--window-size=1280,2400"]  # fmt: skip
    done = subprocess.run([CHROMIUM, *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium; .ci/run installs it)"
)
def test_report_in_headless_chromium(report_inputs, tmp_path):
    from PIL import Image

    from albert_srl.pipeline.report import write_report

    page = tmp_path / "report.html"
    write_report(page, [report_inputs / "metrics" / "dev.json"], report_inputs / "annotations")
    # the check can fail: a page with a console error is caught
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>console.error('broken')</script></body></html>")
    assert ":CONSOLE" in chromium_load(broken, tmp_path / "broken.png", tmp_path)
    log = chromium_load(page, tmp_path / "report.png", tmp_path)
    assert ":CONSOLE" not in log, [line for line in log.splitlines() if ":CONSOLE" in line]
    image = Image.open(tmp_path / "report.png").convert("L")
    assert image.size == (1280, 2400)
    # tables, plots and spans drawn: a good share of the screenshot is not background
    histogram = image.histogram()
    assert 1 - histogram[255] / sum(histogram) > 0.05
