"""BIO labels for one predicate's arguments, and constrained decoding.

Constraints: arguments are BIO-well-formed (so they never overlap each other), never cover the
predicate's head token, and each core role (ARG0-ARG5, ARGA) appears at most once per predicate:
where Viterbi yields a core role twice, the better-scoring span stays and the other is dropped.
"""
import re
from typing import List, Optional, Sequence, Tuple

import numpy

CORE_ROLE = re.compile(r"^ARG[0-5A]$")


def bio_labels(roles: Sequence[str]) -> List[str]:
    """`O`, then `B-r`, `I-r` for each role, in a fixed order."""
    labels = ["O"]
    for role in roles:
        labels.extend((f"B-{role}", f"I-{role}"))
    return labels


def spans_to_bio(length: int, spans: Sequence[Tuple[int, int, int]]) -> numpy.ndarray:
    """Label ids per token from (role index, start, end) spans in sentence offsets (0 = O)."""
    ids = numpy.zeros((length,), dtype="int64")
    for role, start, end in spans:
        ids[start] = 1 + 2 * role
        ids[start + 1 : end] = 2 + 2 * role
    return ids


def viterbi_bio(log_probs: numpy.ndarray, head: int = -1) -> numpy.ndarray:
    """Best BIO label sequence: `I-r` only after `B-r`/`I-r`; the predicate's position `head` is forced to O."""
    return viterbi_bio_batch(log_probs[None], [len(log_probs)], [head])[0]


def viterbi_bio_batch(log_probs: numpy.ndarray, lengths: Sequence[int], blocked: Sequence[int]) -> numpy.ndarray:
    """Best BIO label sequences for many predicates at once (one numpy pass per position, not per
    predicate and position): log_probs (P, L, labels), each row's length, and one position per row
    forced to O (its predicate; -1 for none). Positions past a row's length are 0."""
    n_rows, max_len, n_labels = log_probs.shape
    lengths = numpy.asarray(lengths, dtype=numpy.int64)
    path = numpy.zeros((n_rows, max_len), dtype="int64")
    if n_rows == 0 or max_len == 0:
        return path
    rows = numpy.arange(n_rows)
    scores = log_probs.astype("float64").copy()
    blocked = numpy.asarray(blocked, dtype=numpy.int64)
    has_block = (blocked >= 0) & (blocked < lengths)
    scores[rows[has_block], blocked[has_block], 1:] = -numpy.inf
    begins = numpy.arange(1, n_labels, 2)
    insides = begins + 1
    back = numpy.zeros((n_rows, max_len, n_labels), dtype="int64")
    current = scores[:, 0].copy()
    current[:, insides] = -numpy.inf
    for t in range(1, max_len):
        best_prev = current.argmax(axis=1)
        new = scores[:, t] + current[rows, best_prev][:, None]
        back[:, t] = best_prev[:, None]
        prev_inside = numpy.where(current[:, begins] >= current[:, insides], begins, insides)
        new[:, insides] = scores[:, t, insides] + numpy.take_along_axis(current, prev_inside, axis=1)
        back[:, t, insides] = prev_inside
        current = numpy.where((t < lengths)[:, None], new, current)  # finished rows keep their last column
    last = numpy.maximum(lengths - 1, 0)
    path[rows, last] = current.argmax(axis=1)
    for t in range(max_len - 1, 0, -1):
        inside = t < lengths
        path[inside, t - 1] = back[rows[inside], t, path[inside, t]]
    return path


def bio_to_spans(path: Sequence[int]) -> List[Tuple[int, int, int]]:
    """(role index, start, end) spans of a well-formed BIO label-id sequence."""
    spans = []
    start, role = None, None
    for i, label in enumerate(list(path) + [0]):
        if label == 0 or label % 2 == 1:  # O or B- closes the open span
            if start is not None:
                spans.append((int(role), start, i))
                start = None
            if label % 2 == 1:
                start, role = i, (label - 1) // 2
    return spans


def decode_arguments(log_probs: numpy.ndarray, roles: Sequence[str], head: int, path: Optional[numpy.ndarray] = None) -> List[Tuple[str, int, int, float]]:
    """Constrained decoding of one predicate: (role, start, end, score) in sentence offsets.

    The score is the mean probability of the chosen labels over the span's tokens. `path` is the
    Viterbi path when `viterbi_bio_batch` has found it already.
    """
    if path is None:
        path = viterbi_bio(log_probs, head)
    spans = []
    for role_id, start, end in bio_to_spans(path):
        probs = numpy.exp(log_probs[numpy.arange(start, end), path[start:end]])
        spans.append((roles[role_id], start, end, float(probs.mean())))
    best = {}
    for span in spans:
        if CORE_ROLE.match(span[0]) and (span[0] not in best or span[3] > best[span[0]][3]):
            best[span[0]] = span
    return [s for s in spans if not CORE_ROLE.match(s[0]) or best[s[0]] is s]
