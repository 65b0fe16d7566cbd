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
    """Best BIO label sequences for many predicates at once: log_probs (P, L, labels), each row's
    length, and one position per row forced to O (its predicate; -1 for none). Positions past a
    row's length are 0.

    A row whose per-token best labels already obey the constraints has that as its best path (the
    constraints only remove paths); Viterbi runs on the others, one numpy pass per position."""
    n_rows, max_len, _ = log_probs.shape
    lengths = numpy.asarray(lengths, dtype=numpy.int64)
    blocked = numpy.asarray(blocked, dtype=numpy.int64)
    if n_rows == 0 or max_len == 0:
        return numpy.zeros((n_rows, max_len), dtype="int64")
    padding = numpy.arange(max_len)[None, :] >= lengths[:, None]
    path = numpy.where(padding, 0, log_probs.argmax(axis=2))
    rows = numpy.flatnonzero(~well_formed_rows(path, blocked))
    if len(rows):
        path[rows] = constrained_viterbi(log_probs[rows], lengths[rows], blocked[rows])
    return path


def well_formed_rows(path: numpy.ndarray, blocked: numpy.ndarray) -> numpy.ndarray:
    """Per row of label ids: `I-r` only right after `B-r`/`I-r`, and O at the blocked position."""
    inside = (path > 0) & (path % 2 == 0)
    previous = numpy.pad(path[:, :-1], ((0, 0), (1, 0)))
    continues = (previous == path) | (previous == path - 1)
    ok = ~(inside & ~continues).any(axis=1)
    rows = numpy.arange(len(path))
    has_block = (blocked >= 0) & (blocked < path.shape[1])
    ok[rows[has_block]] &= path[rows[has_block], blocked[has_block]] == 0
    return ok


def constrained_viterbi(log_probs: numpy.ndarray, lengths: numpy.ndarray, blocked: numpy.ndarray) -> numpy.ndarray:
    """Viterbi under the BIO constraints, one numpy pass per position over all rows; each step
    slices B- and I- labels as views (fancy indexing would copy them at every position)."""
    n_rows, max_len, n_labels = log_probs.shape
    rows = numpy.arange(n_rows)
    scores = log_probs.astype("float64")
    has_block = (blocked >= 0) & (blocked < lengths)
    scores[rows[has_block], blocked[has_block], 1:] = -numpy.inf
    # past its length a row may only be O: every row then ends at max_len, and its path at its own
    # last position is the one that leads into that O (O follows anything)
    padding = numpy.arange(max_len)[None, :] >= lengths[:, None]
    scores[padding] = -numpy.inf
    scores[padding, 0] = 0.0
    # back-pointers: O and B- at t come from the best label at t-1; I-r from B-r or from I-r.
    # Labels are O, B-r0, I-r0, B-r1, ...: B- at 1::2, I- at 2::2 (views, no fancy indexing)
    best_previous = numpy.zeros((n_rows, max_len), dtype="int64")
    from_inside = numpy.zeros((n_rows, max_len, (n_labels - 1) // 2), dtype=bool)
    current = scores[:, 0].copy()
    current[:, 2::2] = -numpy.inf
    for t in range(1, max_len):
        previous = current.argmax(axis=1)
        begin, inside = current[:, 1::2], current[:, 2::2]
        from_inside[:, t] = inside > begin  # ties go to B-r
        new = scores[:, t] + current[rows, previous][:, None]
        new[:, 2::2] = scores[:, t, 2::2] + numpy.maximum(inside, begin)
        best_previous[:, t] = previous
        current = new
    pointers = numpy.repeat(best_previous[:, :, None], n_labels, axis=2)
    inside_labels = numpy.arange(2, n_labels, 2)
    pointers[:, :, 2::2] = numpy.where(from_inside, inside_labels, inside_labels - 1)
    path = numpy.zeros((n_rows, max_len), dtype="int64")
    path[:, -1] = current.argmax(axis=1)
    for t in range(max_len - 1, 0, -1):
        path[:, t - 1] = pointers[rows, t, path[:, t]]
    return path


def decode_arguments(
    log_probs: numpy.ndarray, roles: Sequence[str], head: int, path: Optional[numpy.ndarray] = None
) -> List[Tuple[str, int, int, float]]:
    """Constrained decoding of one predicate: (role, start, end, score) in sentence offsets.

    The score is the mean probability of the chosen labels over the span's tokens. `path` is the
    Viterbi path when `viterbi_bio_batch` has found it already.
    """
    if path is None:
        path = viterbi_bio(log_probs, head)
    return decode_arguments_batch(log_probs[None], numpy.asarray(path)[None], roles)[0]


def decode_arguments_batch(
    log_probs: numpy.ndarray, paths: numpy.ndarray, roles: Sequence[str]
) -> List[List[Tuple[str, int, int, float]]]:
    """`decode_arguments` for many predicates' Viterbi paths (P, L) at once (padding is O)."""
    n_rows, max_len = paths.shape
    results: List[List[Tuple[str, int, int, float]]] = [[] for _ in range(n_rows)]
    if n_rows == 0 or max_len == 0:
        return results
    chosen = numpy.take_along_axis(log_probs, paths[:, :, None], axis=2)[:, :, 0]
    cumulative = numpy.pad(numpy.cumsum(numpy.exp(chosen.astype("float64")), axis=1), ((0, 0), (1, 0)))
    # a span runs from its B- to the next position that is not I- (paths are well-formed)
    not_inside = numpy.pad((paths == 0) | (paths % 2 == 1), ((0, 0), (0, 1)), constant_values=True)
    breaks = numpy.where(not_inside, numpy.arange(max_len + 1), max_len)
    next_break = numpy.minimum.accumulate(breaks[:, ::-1], axis=1)[:, ::-1]
    span_rows, starts = numpy.nonzero(paths % 2 == 1)
    ends = next_break[span_rows, starts + 1]
    scores = (cumulative[span_rows, ends] - cumulative[span_rows, starts]) / (ends - starts)
    role_ids = (paths[span_rows, starts] - 1) // 2
    for row, role, start, end, score in zip(
        span_rows.tolist(), role_ids.tolist(), starts.tolist(), ends.tolist(), scores.tolist()
    ):
        results[row].append((roles[role], start, end, score))
    return [one_span_per_core_role(spans) for spans in results]


def one_span_per_core_role(spans: List[Tuple[str, int, int, float]]) -> List[Tuple[str, int, int, float]]:
    """Where a core role labels two spans, the better-scoring one stays (the first on a tie)."""
    best = {}
    for span in spans:
        if CORE_ROLE.match(span[0]) and (span[0] not in best or span[3] > best[span[0]][3]):
            best[span[0]] = span
    return [s for s in spans if s[0] not in best or best[s[0]] is s]
