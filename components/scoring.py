"""SRL scores with the semantics of the CoNLL-2005 scorer (srl-eval.pl), plus predicate scores.

- Predicates pair by position (the head token). A predicted predicate with no gold counterpart is
  ignored by the CoNLL score; a gold predicate with no prediction counts all its arguments missed.
- An argument is (type, pieces). `C-X` pieces join the preceding `X` into one discontinuous
  argument that matches only if every piece does; a `C-X` with no preceding `X` becomes `X`.
- `V` (with its `C-V` pieces) is not scored. `R-X` are ordinary types.
- P = ok / (ok + excess), R = ok / (ok + missed). Predicate sense is not part of it.

Besides: predicate identification P/R/F1 (by position, and by type), sense accuracy over the
predicates found, and an end-to-end F1 in which the arguments of spurious predicates are excess.
"""

from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from spacy.tokens import Doc
from spacy.training import Example

from albert_srl.components.frames import FrameSpec, frame_specs, project_specs, same_tokens

Argument = Tuple[str, Tuple[Tuple[int, int], ...]]


def join_continuations(arguments: Sequence[Tuple[str, int, int]]) -> List[Argument]:
    """Arguments of one predicate as (type, pieces), `C-X` pieces joined to the preceding `X`."""
    joined: List[List] = []
    for role, start, end in sorted(arguments, key=lambda a: (a[1], a[2])):
        if role.startswith("C-"):
            base = role[2:]
            for arg in reversed(joined):
                if arg[0] == base:
                    arg[1].append((start, end))
                    break
            else:
                joined.append([base, [(start, end)]])
        else:
            joined.append([role, [(start, end)]])
    return [(role, tuple(pieces)) for role, pieces in joined if role != "V"]


def prf(ok: int, excess: int, missed: int) -> Dict[str, float]:
    p = ok / (ok + excess) if ok + excess else 0.0
    r = ok / (ok + missed) if ok + missed else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f": f}


class SRLCounts:
    """Accumulates the counts for every score; `scores()` turns them into a flat dict."""

    def __init__(self):
        self.roles = defaultdict(Counter)  # role -> ok / excess / missed (CoNLL semantics)
        self.e2e = Counter()
        self.predicates = Counter()
        self.predicates_by_type = defaultdict(Counter)
        self.senses = Counter()
        self.arguments_by_type = defaultdict(Counter)  # gold predicate type -> ok / excess / missed

    def add(self, gold: Sequence[FrameSpec], pred: Sequence[FrameSpec]) -> None:
        gold_by_head = {f.head: f for f in gold}
        pred_by_head = {f.head: f for f in pred}
        for head, g in gold_by_head.items():
            gold_args = Counter(join_continuations(g.arguments))
            p = pred_by_head.get(head)
            pred_args = Counter(join_continuations(p.arguments)) if p is not None else Counter()
            for arg in gold_args | pred_args:
                ok = min(gold_args[arg], pred_args[arg])
                for counter in (self.roles[arg[0]], self.arguments_by_type[g.predicate_type]):
                    counter["ok"] += ok
                    counter["missed"] += gold_args[arg] - ok
                    counter["excess"] += pred_args[arg] - ok
            if p is not None:
                self.predicates["ok"] += 1
                self.predicates_by_type[g.predicate_type]["ok"] += 1
                self.senses["ok"] += int(p.sense == g.sense)
                self.senses["total"] += 1
            else:
                self.predicates["missed"] += 1
                self.predicates_by_type[g.predicate_type]["missed"] += 1
        for head, p in pred_by_head.items():
            if head not in gold_by_head:
                self.predicates["excess"] += 1
                self.predicates_by_type[p.predicate_type]["excess"] += 1
                self.e2e["spurious"] += len(join_continuations(p.arguments))

    def scores(self, prefix: str = "srl_") -> Dict[str, object]:
        ok = sum(c["ok"] for c in self.roles.values())
        excess = sum(c["excess"] for c in self.roles.values())
        missed = sum(c["missed"] for c in self.roles.values())
        overall = prf(ok, excess, missed)
        e2e = prf(ok, excess + self.e2e["spurious"], missed)
        predicates = prf(self.predicates["ok"], self.predicates["excess"], self.predicates["missed"])
        return {
            f"{prefix}p": overall["p"],
            f"{prefix}r": overall["r"],
            f"{prefix}f": overall["f"],
            f"{prefix}per_role": {
                role: {**prf(c["ok"], c["excess"], c["missed"]), "support": c["ok"] + c["missed"]}
                for role, c in sorted(self.roles.items())
            },
            f"{prefix}counts": {"ok": ok, "excess": excess, "missed": missed},
            f"{prefix}e2e_p": e2e["p"],
            f"{prefix}e2e_r": e2e["r"],
            f"{prefix}e2e_f": e2e["f"],
            f"{prefix}pred_p": predicates["p"],
            f"{prefix}pred_r": predicates["r"],
            f"{prefix}pred_f": predicates["f"],
            f"{prefix}pred_per_type": {
                t: prf(c["ok"], c["excess"], c["missed"]) for t, c in sorted(self.predicates_by_type.items())
            },
            f"{prefix}per_predicate_type": {
                t: prf(c["ok"], c["excess"], c["missed"]) for t, c in sorted(self.arguments_by_type.items())
            },
            f"{prefix}sense_acc": self.senses["ok"] / self.senses["total"] if self.senses["total"] else 0.0,
        }


def aligned_specs(example: Example) -> List[FrameSpec]:
    """The predicted frames in the reference's token offsets (identity when tokens agree)."""
    predicted = frame_specs(example.predicted)
    if same_tokens(example.predicted, example.reference):
        return predicted
    return project_specs(predicted, example.alignment.x2y)


def score_srl(examples: Iterable[Example], **kwargs) -> Dict[str, object]:
    """Score predicted frames against the reference Docs (see the module docstring)."""
    counts = SRLCounts()
    for example in examples:
        counts.add(frame_specs(example.reference), aligned_specs(example))
    return counts.scores()


# ---------------------------------------------------------------------------------------------
# CoNLL-2005 props files, so anyone can re-check with srl-eval.pl


def frame_extent(frame: FrameSpec) -> Tuple[int, int]:
    """The tokens a frame touches: its predicate, head and every argument piece."""
    starts = [frame.head, frame.predicate[0]] + [start for _, start, _ in frame.arguments]
    ends = [frame.head + 1, frame.predicate[1]] + [end for _, _, end in frame.arguments]
    return min(starts), max(ends)


def props_blocks(ref: Doc, *frame_sets: Sequence[FrameSpec]) -> List[Tuple[int, int]]:
    """The blocks of a props file for one document: the reference's sentences, merged wherever a
    frame of any set crosses a sentence boundary.

    srl-eval.pl reads a props file block by block, so a predicted argument that reaches into the
    next gold sentence (the senter joined two) must stay whole: cut at the gold boundary, it could
    turn into a correct argument or vanish, and the two scorers would disagree."""
    if not len(ref):
        return []
    sentences = ref.sents if ref.has_annotation("SENT_START") else [ref[:]]
    boundaries = {sent.start for sent in sentences} - {0}
    for frames in frame_sets:
        for frame in frames:
            start, end = frame_extent(frame)
            boundaries.difference_update(range(start + 1, end))
    edges = [0] + sorted(boundaries) + [len(ref)]
    return list(zip(edges[:-1], edges[1:]))


def props_word(text: str) -> str:
    """A token as srl-eval.pl can read it in the predicate column: no whitespace, never `-`."""
    word = "_".join(text.split()) or "_"
    return "_-_" if word == "-" else word


def props_lines(words: Sequence[str], frames: Sequence[FrameSpec], blocks: Sequence[Tuple[int, int]]) -> List[str]:
    """One props block per (start, end): the predicate's word or `-`, then one bracket column per
    predicate whose head is in the block, in head order."""
    lines: List[str] = []
    for block_start, block_end in blocks:
        own = sorted((f for f in frames if block_start <= f.head < block_end), key=lambda f: f.head)
        columns = []
        for frame in own:
            cells = ["*"] * (block_end - block_start)
            spans = [("V", *frame.predicate)] + list(frame.arguments)
            # inner spans first: where two spans share a start or an end, the outer one then opens
            # before and closes after the inner one
            for role, start, end in sorted(spans, key=lambda span: span[2] - span[1]):
                if start < block_start or end > block_end or start >= end:
                    raise ValueError(
                        f"{role} span ({start}, {end}) lies outside its props block ({block_start}, {block_end})"
                    )
                cells[start - block_start] = f"({role}" + cells[start - block_start]
                cells[end - 1 - block_start] += ")"
            columns.append(cells)
        heads = {frame.head: props_word(words[frame.head]) for frame in own}
        for i in range(block_start, block_end):
            lines.append("\t".join([heads.get(i, "-")] + [column[i - block_start] for column in columns]))
        lines.append("")
    return lines


def write_props(
    refs: Sequence[Doc], predicted: Sequence[Sequence[FrameSpec]], gold_path: Path, pred_path: Path
) -> None:
    """Write the reference frames and the predicted frames (in the references' token offsets) as
    CoNLL-2005 props files with the same blocks, so `srl-eval.pl GOLD PRED` scores what
    `SRLCounts` scores."""
    with open(gold_path, "w", encoding="utf8") as gold_file, open(pred_path, "w", encoding="utf8") as pred_file:
        for ref, pred_frames in zip(refs, predicted):
            gold_frames = frame_specs(ref)
            blocks = props_blocks(ref, gold_frames, pred_frames)
            words = [token.text for token in ref]
            gold_file.writelines(line + "\n" for line in props_lines(words, gold_frames, blocks))
            pred_file.writelines(line + "\n" for line in props_lines(words, pred_frames, blocks))
