"""The project's scorer against the official CoNLL-2005 srl-eval.pl on the props files it writes.

srl-eval.pl ships in the `allennlp-models` wheel (`pip install --no-deps allennlp-models==2.10.1`, as
the README's install command does); SRL_EVAL_PL may point at another copy. Predictions are the gold
frames of real EWT documents, perturbed the ways a model errs: missed and spurious predicates,
dropped, relabelled and shifted arguments, continuation pieces, and arguments that reach into the
next gold sentence (as when the senter joins two sentences).
"""

import importlib.util
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

import pytest
import spacy

from albert_srl.components.frames import FrameSpec, frame_specs, set_frames
from albert_srl.components.scoring import SRLCounts, prf, props_blocks, props_lines, write_props
from albert_srl.corpora.docs import sentences_to_doc
from albert_srl.corpora.ewt import convert_document
from albert_srl.pipeline.convert import PROPBANK_SUBDIR, UD_SOURCES_SUBDIR, read_split_lists

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ALBERT_SRL_SHARED", REPO.parent / "shared"))
FIXTURE_EWT = REPO / "corpora" / "fixtures" / "ewt-mini"
REAL_EWT = SHARED / "corpora" / "ewt-propbank"
ROLES = ["ARG0", "ARG1", "ARG2", "ARGM-TMP", "ARGM-DIS", "ARGM-ADV", "R-ARG0", "C-ARG1"]


def find_srl_eval() -> Optional[Path]:
    if os.environ.get("SRL_EVAL_PL"):
        return Path(os.environ["SRL_EVAL_PL"])
    # find_spec locates the package without importing it (its own dependencies are not installed)
    spec = importlib.util.find_spec("allennlp_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "structured_prediction" / "tools" / "srl-eval.pl"
    return path if path.exists() else None


SRL_EVAL = find_srl_eval()
needs_srl_eval = pytest.mark.skipif(
    SRL_EVAL is None or shutil.which("perl") is None,
    reason="srl-eval.pl not found: `pip install --no-deps allennlp-models==2.10.1` (or set SRL_EVAL_PL), and perl",
)


def ewt_docs(ewt_dir: Path, split: Optional[str] = None) -> List[spacy.tokens.Doc]:
    """Convert the EWT documents of one split (all documents when None) to Docs with gold frames."""
    vocab = spacy.blank("en").vocab
    split_of = read_split_lists(ewt_dir)
    docs = []
    for skel_path in sorted((ewt_dir / PROPBANK_SUBDIR).glob("*/00/*.gold_skel")):
        genre, name = skel_path.parts[-3], skel_path.name.removesuffix(".gold_skel")
        ud_path = ewt_dir / UD_SOURCES_SUBDIR / genre / f"{name}.conllu"
        if (split is not None and split_of.get(f"{genre}/{name}") != split) or not ud_path.exists():
            continue
        sentences, _ = convert_document(skel_path, ud_path)
        if sentences:
            docs.append(sentences_to_doc(vocab, sentences, doc_id=f"{genre}/{name}", genre=genre))
    return docs


def overlaps(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def perturb(doc, rng: random.Random) -> List[FrameSpec]:
    """Predicted frames for `doc`: its gold frames with a model's kinds of errors. Arguments never
    overlap each other or their predicate, as the srl pipe's decoding guarantees."""
    sent_ends = {sent.start: sent.end for sent in doc.sents}
    sent_of = {i: (sent.start, sent.end) for sent in doc.sents for i in range(sent.start, sent.end)}
    gold = frame_specs(doc)
    heads = {f.head for f in gold}
    predicted = []
    for frame in gold:
        if rng.random() < 0.08:  # missed predicate
            continue
        candidates = []
        for role, start, end in frame.arguments:
            if role == "C-V":
                candidates.append((role, start, end))
                continue
            roll = rng.random()
            if roll < 0.1:
                continue  # missed argument
            if roll < 0.2:
                role = rng.choice(ROLES)
            elif roll < 0.3:
                end = max(start + 1, min(len(doc), end + rng.choice((-1, 1))))
            elif roll < 0.35 and end - start >= 3:  # a continuation piece: X + C-X
                middle = rng.randrange(start + 1, end)
                candidates.append((f"C-{role}", middle, end))
                end = middle
            candidates.append((role, start, end))
        sent_start, sent_end = sent_of[frame.head]
        if sent_end < len(doc) and rng.random() < 0.3:
            # the senter joined this sentence to the next: an argument there, or one across the boundary
            next_end = sent_ends[sent_end]
            if rng.random() < 0.5:
                candidates.append(("ARGM-DIS", sent_end, min(next_end, sent_end + 2)))
            else:
                candidates.append(("ARG1", max(frame.head + 1, sent_end - 1), min(next_end, sent_end + 1)))
        if rng.random() < 0.1:  # a continuation with no piece before it
            token = rng.randrange(sent_start, sent_end)
            candidates.append(("C-ARG2", token, token + 1))
        predicted.append(
            FrameSpec(
                frame.head, frame.sense, frame.predicate, frame.predicate_type, clean(candidates, frame.predicate)
            )
        )
    for _ in range(max(1, len(gold) // 10)):  # spurious predicates
        head = rng.randrange(len(doc))
        if head not in heads:
            heads.add(head)
            sent_start, sent_end = sent_of[head]
            arg = (sent_start, head) if head > sent_start else (head + 1, sent_end)
            args = [("ARG0", *arg)] if arg[0] < arg[1] else []
            predicted.append(FrameSpec(head, "x.01", (head, head + 1), "nominal", args))
    return predicted


def clean(arguments, predicate) -> List[tuple]:
    kept = []
    for role, start, end in arguments:
        span = (start, end)
        if start < end and not overlaps(span, predicate) and not any(overlaps(span, k[1:]) for k in kept):
            kept.append((role, start, end))
    return sorted(kept, key=lambda a: a[1])


def srl_eval(gold: Path, pred: Path) -> dict:
    result = subprocess.run(["perl", str(SRL_EVAL), str(gold), str(pred)], capture_output=True, text=True, check=True)
    match = re.search(r"^\s*Overall\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", result.stdout, re.M)
    assert match, result.stdout + result.stderr
    ok, excess, missed = map(int, match.groups()[:3])
    return {"ok": ok, "excess": excess, "missed": missed, "f": float(match[6])}


def check_agreement(docs: Sequence, tmp_path: Path, seed: int) -> dict:
    rng = random.Random(seed)
    predicted = [perturb(doc, rng) for doc in docs]
    counts = SRLCounts()
    for doc, frames in zip(docs, predicted):
        counts.add(frame_specs(doc), frames)
    ours = counts.scores()["srl_counts"]
    write_props(docs, predicted, tmp_path / "gold.props", tmp_path / "pred.props")
    official = srl_eval(tmp_path / "gold.props", tmp_path / "pred.props")
    assert {k: official[k] for k in ours} == ours
    assert abs(100 * prf(**ours)["f"] - official["f"]) < 0.01
    return ours


def crossing_arguments(docs) -> int:
    """Predicted arguments in another gold sentence than their predicate (the props files must keep them)."""
    return sum(
        1
        for doc, frames in docs
        for f in frames
        for _, start, end in f.arguments
        if not (doc[f.head].sent.start <= start and end <= doc[f.head].sent.end)
    )


@needs_srl_eval
def test_srl_eval_agrees_on_the_ewt_fixture(tmp_path):
    docs = ewt_docs(FIXTURE_EWT)
    assert docs
    for seed in range(5):
        counts = check_agreement(docs, tmp_path, seed)
        assert counts["ok"] and counts["excess"] and counts["missed"]


@needs_srl_eval
@pytest.mark.skipif(not (REAL_EWT / "propbank").exists(), reason=f"the real EWT corpus is not at {REAL_EWT}")
def test_srl_eval_agrees_on_ewt_dev(tmp_path):
    docs = ewt_docs(REAL_EWT, "dev")
    assert sum(len(frame_specs(d)) for d in docs) > 4900  # EWT dev: 4,977 predicates in the raw files
    rng = random.Random(0)
    assert crossing_arguments([(d, perturb(d, rng)) for d in docs]) > 100
    counts = check_agreement(docs, tmp_path, seed=0)
    assert counts["ok"] > 5000 and counts["excess"] > 1000 and counts["missed"] > 1000


def test_props_blocks_keep_frames_whole():
    nlp = spacy.blank("en")
    words = "It rained . So we stayed . Then we left .".split()
    doc = spacy.tokens.Doc(nlp.vocab, words=words, sent_starts=[i in (0, 3, 7) for i in range(len(words))])
    gold = [FrameSpec(1, "rain.01", (1, 2), "verbal", []), FrameSpec(5, "stay.01", (5, 6), "verbal", [("ARG0", 4, 5)])]
    assert props_blocks(doc, gold) == [(0, 3), (3, 7), (7, 11)]
    # a predicted argument of `rained` in the next sentence joins the first two blocks
    pred = [FrameSpec(1, "rain.01", (1, 2), "verbal", [("ARGM-DIS", 3, 4)])]
    assert props_blocks(doc, gold, pred) == [(0, 7), (7, 11)]
    set_frames(doc, gold)
    lines = props_lines([t.text for t in doc], pred, [(0, 7), (7, 11)])
    assert lines[:8] == ["-\t*", "rained\t(V*)", "-\t*", "-\t(ARGM-DIS*)", "-\t*", "-\t*", "-\t*", ""]


def test_props_words_srl_eval_can_read():
    frames = [FrameSpec(0, "x.01", (0, 1), "verbal", []), FrameSpec(2, "y.01", (2, 3), "verbal", [])]
    lines = props_lines(["-", "b", "new york"], frames, [(0, 3)])
    assert [line.split("\t")[0] for line in lines[:3]] == ["_-_", "-", "new_york"]
