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


def make_srl_scorer():
    return score_srl


# ---------------------------------------------------------------------------------------------
# CoNLL-2005 props files, so anyone can re-check with srl-eval.pl


def props_lines(doc: Doc) -> List[str]:
    """One props block per sentence: predicate word or `-`, then one bracket column per predicate."""
    lines: List[str] = []
    frames = frame_specs(doc)
    sentences = list(doc.sents) if doc.has_annotation("SENT_START") else [doc[:]]
    for sent in sentences:
        own = [f for f in frames if sent.start <= f.head < sent.end]
        columns = []
        for f in own:
            cells = ["*"] * len(sent)
            spans = [("V", *f.predicate)] + [a for a in f.arguments]
            for role, start, end in spans:
                start, end = max(start, sent.start) - sent.start, min(end, sent.end) - sent.start
                if start >= end:
                    continue
                cells[start] = f"({role}" + cells[start]
                cells[end - 1] = cells[end - 1] + ")"
            columns.append(cells)
        heads = {f.head - sent.start: doc[f.head].text for f in own}
        for i in range(len(sent)):
            row = [heads.get(i, "-")] + [col[i] for col in columns]
            lines.append("\t".join(row))
        lines.append("")
    return lines


def write_props(docs: Iterable[Doc], path: Path) -> None:
    with open(path, "w", encoding="utf8") as f:
        for doc in docs:
            f.write("\n".join(props_lines(doc)) + "\n")
