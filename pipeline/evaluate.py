"""Evaluate a trained SRL pipeline on a .spacy corpus (spacy evaluate drops custom metric keys).

Scores, all with the CoNLL-2005 scorer's semantics (components/scoring.py):
- predicted predicates (the pipeline as users run it, raw tokens in, sentences found by the
  senter): `srl_f` (arguments), predicate P/R/F1, sense accuracy, end-to-end F1;
- gold predicates (and gold sentences): argument P/R/F1, the setting of most published results;
- with a tagger, morphologizer or parser in the pipeline: UPOS, tag and morphology accuracy, UAS
  and LAS (spaCy's scorers, punctuation excluded), on the predicted sentences.
Also writes CoNLL-2005 props files `<props-prefix>.gold.props` and `.pred.props` (one block per
gold sentence, merged where a frame crosses a sentence boundary) on which srl-eval.pl gives the same
counts as `srl_f`, and the predicted Docs as `.pred.spacy` (the report reads them).

    python -m albert_srl.pipeline.evaluate training/model-best corpus/ewt/dev.spacy metrics/ewt-dev.json
"""

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import typer
from spacy.cli._util import parse_config_overrides
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from wasabi import msg

from albert_srl.components.frames import FrameSpec, frame_specs, set_frames
from albert_srl.components.scoring import SRLCounts, write_props
from albert_srl.pipeline.loading import PipelineLoadError, load_srl_pipeline

# pipes whose scores `evaluate` reports beside the frames, and those scores
SYNTAX_PIPES = ("tagger", "morphologizer", "parser")
SYNTAX_SCORES = ("pos_acc", "tag_acc", "morph_acc", "dep_uas", "dep_las")


def load_pipeline(model: str, gpu_id: int, overrides: Optional[Dict[str, object]] = None):
    try:
        return load_srl_pipeline(model, gpu_id, overrides)
    except PipelineLoadError as err:
        msg.fail(str(err), exits=1)


def plain_doc(nlp, ref: Doc, keep_sentences: bool) -> Doc:
    """The reference's words and spaces only (no frames), optionally with its sentence starts."""
    starts = [t.is_sent_start for t in ref] if keep_sentences else None
    return Doc(nlp.vocab, words=[t.text for t in ref], spaces=[bool(t.whitespace_) for t in ref], sent_starts=starts)


def with_gold_sentences(ref: Doc, predicted: Doc) -> Doc:
    """The predicted frames on a copy of the reference, with its gold sentences (for `report`)."""
    doc = ref.copy()
    set_frames(doc, frame_specs(predicted))
    return doc


def evaluate(nlp, refs: List[Doc], batch_size: int = 32) -> Tuple[Dict[str, object], List[Doc]]:
    """The scores of `nlp` on `refs` (predicted and gold predicates) and its predicted Docs."""
    predicted_counts, gold_pred_counts = SRLCounts(), SRLCounts()
    by_genre: Dict[str, SRLCounts] = {}
    predicted_docs = []
    n_words = sum(len(r) for r in refs)
    start = time.perf_counter()
    for ref, doc in zip(refs, nlp.pipe((plain_doc(nlp, r, False) for r in refs), batch_size=batch_size)):
        gold_frames, predicted_frames = frame_specs(ref), frame_specs(doc)
        predicted_counts.add(gold_frames, predicted_frames)
        by_genre.setdefault(ref.user_data.get("genre") or "all", SRLCounts()).add(gold_frames, predicted_frames)
        predicted_docs.append(doc)
    seconds = time.perf_counter() - start
    srl = nlp.get_pipe("srl")
    # gold predicates and sentences: run the pipeline without srl (and the syntax, which srl does
    # not read), then label the given predicates
    with nlp.select_pipes(disable=["srl", *(name for name in SYNTAX_PIPES if name in nlp.pipe_names)]):
        given = list(nlp.pipe((plain_doc(nlp, r, True) for r in refs), batch_size=batch_size))
    for ref, doc in zip(refs, given):
        set_frames(doc, [FrameSpec(f.head, "", (f.head, f.head + 1), f.predicate_type) for f in frame_specs(ref)])
    for i in range(0, len(given), batch_size):
        srl.label_given_predicates(given[i : i + batch_size])
    for ref, doc in zip(refs, given):
        gold_pred_counts.add(frame_specs(ref), frame_specs(doc))
    scores = predicted_counts.scores()
    gold = gold_pred_counts.scores()
    scores["gold_predicates"] = {
        k.removeprefix("srl_"): v
        for k, v in gold.items()
        if not k.startswith("srl_pred") and not k.startswith("srl_e2e")
    }
    scores["by_genre"] = {
        g: {k: v for k, v in c.scores().items() if isinstance(v, float)} for g, c in sorted(by_genre.items())
    }
    scores["sents_f"] = sentence_f(refs, predicted_docs)
    scores.update(syntax_scores(nlp, refs, predicted_docs))
    scores["words"] = n_words
    scores["words_per_second"] = n_words / seconds if seconds else 0.0
    return scores, predicted_docs


def score_rows(scores: dict) -> List[Tuple[str, float, float, float]]:
    """The headline (name, P, R, F1) rows of `evaluate`'s scores, as the CLI and the report show them."""
    g = scores["gold_predicates"]
    return [
        ("arguments, predicted predicates (srl_f)", scores["srl_p"], scores["srl_r"], scores["srl_f"]),
        ("arguments, end to end", scores["srl_e2e_p"], scores["srl_e2e_r"], scores["srl_e2e_f"]),
        ("arguments, gold predicates", g["p"], g["r"], g["f"]),
        ("predicate identification", scores["srl_pred_p"], scores["srl_pred_r"], scores["srl_pred_f"]),
    ]


def syntax_scores(nlp, refs: List[Doc], docs: List[Doc]) -> Dict[str, Optional[float]]:
    """UPOS, tag and morphology accuracy and UAS/LAS (punctuation excluded, spaCy's scorers) for the
    pipeline's tagger, morphologizer and parser, on the predicted sentences; None where the corpus
    has no gold annotation of that kind. Empty for a pipeline without these pipes."""
    examples = [Example(doc, ref) for doc, ref in zip(docs, refs)]
    scores: Dict[str, Optional[float]] = {}
    for name in SYNTAX_PIPES:
        if name in nlp.pipe_names:
            found = nlp.get_pipe(name).score(examples)
            scores.update({key: found[key] for key in SYNTAX_SCORES if key in found})
    return scores


def sentence_f(refs: List[Doc], docs: List[Doc]) -> float:
    ok = gold = pred = 0
    for ref, doc in zip(refs, docs):
        g = {s.start for s in ref.sents} if ref.has_annotation("SENT_START") else set()
        p = {s.start for s in doc.sents} if doc.has_annotation("SENT_START") else set()
        ok, gold, pred = ok + len(g & p), gold + len(g), pred + len(p)
    return 2 * ok / (gold + pred) if gold + pred else 0.0


app = typer.Typer(add_completion=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Trained pipeline: a folder (training/model-best) or an installed package"),
    data: Path = typer.Argument(..., help="A .spacy corpus with gold frames (corpus/ewt/dev.spacy)"),
    output: Path = typer.Argument(..., help="Metrics JSON to write (metrics/ewt-dev.json)"),
    props_prefix: Optional[Path] = typer.Option(
        None, help="Write <prefix>.gold.props and <prefix>.pred.props (default: OUTPUT without .json)"
    ),
    batch_size: int = typer.Option(32, help="Docs per nlp.pipe batch"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    limit: int = typer.Option(0, help="Evaluate only the first N docs (0 = all)"),
):
    """Score a pipeline with predicted and with gold predicates; write metrics JSON and props files.
    Extra options override the pipeline's config, e.g. --components.srl.argument_o_bias 1.0."""
    if not data.exists():
        msg.fail(f"{data} not found", "Run `spacy project run convert` first.", exits=1)
    overrides = parse_config_overrides(ctx.args)
    nlp = load_pipeline(model, gpu_id, overrides)
    refs = list(DocBin().from_disk(data).get_docs(nlp.vocab))
    if limit:
        refs = refs[:limit]
    scores, docs = evaluate(nlp, refs, batch_size)
    scores["model"] = str(model)
    scores["overrides"] = overrides
    scores["data"] = str(data)
    scores["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(scores, indent=2), encoding="utf8")
    prefix = props_prefix or output.with_suffix("")
    write_props(refs, [frame_specs(d) for d in docs], Path(f"{prefix}.gold.props"), Path(f"{prefix}.pred.props"))
    predicted = [with_gold_sentences(r, d) for r, d in zip(refs, docs)]
    # the predicted frames on the gold tokens and sentences, for `report` (confusions, examples)
    DocBin(docs=predicted, store_user_data=True).to_disk(Path(f"{prefix}.pred.spacy"))
    rows = [(label, *(f"{100 * x:.2f}" for x in prf)) for label, *prf in score_rows(scores)]
    msg.table(rows, header=("", "P", "R", "F1"), divider=True, aligns=("l", "r", "r", "r"))
    msg.info(
        f"Sense accuracy {100 * scores['srl_sense_acc']:.2f}; sentence F1 {100 * scores['sents_f']:.2f}; "
        f"{scores['words_per_second']:.0f} words/s"
    )
    syntax = [f"{key} {100 * scores[key]:.2f}" for key in SYNTAX_SCORES if scores.get(key) is not None]
    if syntax:
        msg.info("Syntax (punctuation excluded from UAS/LAS): " + "; ".join(syntax))
    msg.good(f"Wrote {output}, {prefix}.gold.props, {prefix}.pred.props, {prefix}.pred.spacy")


if __name__ == "__main__":
    app()
