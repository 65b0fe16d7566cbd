"""What the report counts: gold and predicted frames compared on the same tokens, and an annotate run's tables.

Arguments are scored as the CoNLL-2005 scorer scores them (continuations joined to their argument;
predicates the gold side lacks are left out), so the tables agree with `evaluate`'s figures.
"""

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Optional, Tuple

from albert_srl.components.frames import FrameSpec, frame_specs
from albert_srl.components.scoring import SRLCounts, join_continuations, prf

ARG_LENGTH_BUCKETS = [(1, 1), (2, 2), (3, 4), (5, 7), (8, 12), (13, 10**6)]
SENT_LENGTH_BUCKETS = [(1, 10), (11, 20), (21, 30), (31, 40), (41, 10**6)]
NONE = "(none)"


def bucket_name(bucket: Tuple[int, int]) -> str:
    low, high = bucket
    return str(low) if low == high else f"{low}+" if high >= 10**6 else f"{low}-{high}"


def bucket_of(n: int, buckets) -> Tuple[int, int]:
    return next((b for b in buckets if b[0] <= n <= b[1]), buckets[0])


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


def read_table(folder: Path, table: str):
    """One table of an annotate output: the files of the parts its manifest records as finished."""
    import pandas as pd

    from albert_srl.pipeline.store import Manifest, Part

    names = Manifest(folder).data.get("parts", {})
    files = [p for p in (Part("", name, 0, 0).output_path(folder, table) for name in names) if p.exists()]
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True) if files else pd.DataFrame()
