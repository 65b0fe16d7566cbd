"""The scorer against counts worked out by hand (CoNLL-2005 srl-eval.pl semantics)."""

import spacy
from spacy.training import Example

from albert_srl.components.frames import FrameSpec, set_frames
from albert_srl.components.scoring import SRLCounts, join_continuations, props_lines, score_srl

#            0    1    2  3   4    5  6     7
WORDS = "The man , he said , left .".split()


def doc_with(nlp, frames):
    doc = nlp.make_doc(" ".join(WORDS))
    set_frames(doc, frames)
    return doc


def test_join_continuations():
    args = [("ARG1", 0, 2), ("ARG0", 3, 4), ("C-ARG1", 6, 7), ("C-ARG2", 7, 8), ("V", 4, 5), ("C-V", 5, 6)]
    assert join_continuations(args) == [("ARG1", ((0, 2), (6, 7))), ("ARG0", ((3, 4),)), ("ARG2", ((7, 8),))]


def test_scores_worked_by_hand():
    nlp = spacy.blank("en")
    gold = [
        # say: ARG1 is discontinuous (The man ... left)
        FrameSpec(4, "say.01", (4, 5), "verbal", [("ARG1", 0, 2), ("ARG0", 3, 4), ("C-ARG1", 6, 7)]),
        FrameSpec(6, "leave.01", (6, 7), "verbal", [("ARG0", 0, 2)]),
        FrameSpec(1, "man.01", (1, 2), "nominal", [("ARG0", 0, 1)]),  # missed entirely below
    ]
    pred = [
        # say: ARG0 right; ARG1 only its first piece -> the discontinuous ARG1 does not match
        FrameSpec(4, "say.01", (4, 5), "verbal", [("ARG1", 0, 2), ("ARG0", 3, 4)]),
        # leave: right span, right role, wrong sense (sense is not part of the CoNLL score)
        FrameSpec(6, "leave.02", (6, 7), "verbal", [("ARG0", 0, 2), ("ARGM-TMP", 7, 8)]),
        # spurious predicate: ignored by the CoNLL score, its argument is an error end to end
        FrameSpec(3, "he.01", (3, 4), "nominal", [("ARG1", 0, 1)]),
    ]
    eg = Example(doc_with(nlp, pred), doc_with(nlp, gold))
    scores = score_srl([eg])
    # gold arguments: say ARG1(2 pieces), say ARG0, leave ARG0, man ARG0 = 4
    # ok: say ARG0, leave ARG0 = 2; excess: say ARG1(1 piece), leave ARGM-TMP = 2; missed: say ARG1, man ARG0 = 2
    assert scores["srl_counts"] == {"ok": 2, "excess": 2, "missed": 2}
    assert scores["srl_p"] == 0.5 and scores["srl_r"] == 0.5 and scores["srl_f"] == 0.5
    # end to end: the spurious predicate's ARG1 is one more excess: P = 2/5
    assert abs(scores["srl_e2e_p"] - 2 / 5) < 1e-9 and scores["srl_e2e_r"] == 0.5
    # predicates: 2 found, 1 spurious, 1 missed
    assert abs(scores["srl_pred_p"] - 2 / 3) < 1e-9 and abs(scores["srl_pred_r"] - 2 / 3) < 1e-9
    assert scores["srl_pred_per_type"]["nominal"] == {"p": 0.0, "r": 0.0, "f": 0.0}
    assert scores["srl_sense_acc"] == 0.5
    per_role = scores["srl_per_role"]
    assert (
        per_role["ARG0"]["p"] == 1.0 and abs(per_role["ARG0"]["r"] - 2 / 3) < 1e-9 and per_role["ARG0"]["support"] == 3
    )
    assert per_role["ARG1"] == {"p": 0.0, "r": 0.0, "f": 0.0, "support": 1}
    assert per_role["ARGM-TMP"]["p"] == 0.0 and per_role["ARGM-TMP"]["support"] == 0


def test_continuation_without_base_counts_as_base():
    counts = SRLCounts()
    gold = [FrameSpec(4, "say.01", (4, 5), "verbal", [("ARG1", 6, 7)])]
    pred = [FrameSpec(4, "say.01", (4, 5), "verbal", [("C-ARG1", 6, 7)])]
    counts.add(gold, pred)
    assert counts.scores()["srl_f"] == 1.0


def test_props_lines():
    frames = [
        FrameSpec(4, "say.01", (4, 5), "verbal", [("ARG1", 0, 2), ("ARG0", 3, 4), ("C-ARG1", 6, 7)]),
        FrameSpec(6, "leave.01", (6, 7), "verbal", [("ARG0", 0, 2)]),
    ]
    lines = props_lines(WORDS, frames, [(0, len(WORDS))])
    assert lines == [
        "-\t(ARG1*\t(ARG0*",
        "-\t*)\t*)",
        "-\t*\t*",
        "-\t(ARG0*)\t*",
        "said\t(V*)\t*",
        "-\t*\t*",
        "left\t(C-ARG1*)\t(V*)",
        "-\t*\t*",
        "",
    ]
