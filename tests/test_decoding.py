"""Constrained decoding: well-formed BIO paths, the predicate never inside an argument, one span per
core role; the batched Viterbi finds exactly the per-predicate paths."""

import itertools

import numpy

from albert_srl.components.decoding import (
    CORE_ROLE,
    bio_labels,
    decode_arguments,
    decode_arguments_batch,
    spans_to_bio,
    viterbi_bio,
    viterbi_bio_batch,
    well_formed_rows,
)


def well_formed(path) -> bool:
    """I-r only after B-r or I-r of the same role."""
    previous = 0
    for label in path:
        if label and label % 2 == 0 and (previous == 0 or (previous + 1) // 2 != label // 2):
            return False
        previous = label
    return True


def random_log_probs(rng, length, n_labels):
    logits = rng.normal(size=(length, n_labels)) * 3
    return logits - numpy.log(numpy.exp(logits).sum(axis=1, keepdims=True))


def test_viterbi_finds_the_best_well_formed_path_exhaustively():
    """Both ways: rows whose per-token best labels obey the constraints (taken as they are) and rows
    that need the search."""
    rng = numpy.random.default_rng(0)
    n_labels, length = 5, 4  # O, B-/I- of two roles
    greedy_ok = []
    for trial in range(60):
        log_probs = random_log_probs(rng, length, n_labels)
        if trial % 2:
            log_probs[:, 0] += 4  # mostly O, as a trained head's rows are
        blocked = int(rng.integers(length))
        greedy_ok.append(bool(well_formed_rows(log_probs.argmax(axis=1)[None], numpy.array([blocked]))[0]))
        candidates = [
            p for p in itertools.product(range(n_labels), repeat=length) if well_formed(p) and p[blocked] == 0
        ]
        best = max(candidates, key=lambda p: log_probs[numpy.arange(length), list(p)].sum())
        assert viterbi_bio(log_probs, head=blocked).tolist() == list(best)
    assert 5 < sum(greedy_ok) < 55


def test_batched_viterbi_ignores_padding_and_other_rows():
    rng = numpy.random.default_rng(1)
    n_labels = 1 + 2 * 6
    lengths = [1, 2, 7, 30, 13, 30, 4]
    log_probs = numpy.stack(
        [numpy.pad(random_log_probs(rng, n, n_labels), ((0, 30 - n), (0, 0)), constant_values=0.0) for n in lengths]
    )
    blocked = [0, -1, 3, 29, 12, 0, 2]
    paths = viterbi_bio_batch(log_probs, lengths, blocked)
    for k, n in enumerate(lengths):
        expected = viterbi_bio(log_probs[k, :n], head=blocked[k])  # the row alone, unpadded
        assert paths[k, :n].tolist() == expected.tolist()
        assert not paths[k, n:].any()
    assert viterbi_bio_batch(log_probs[:0], [], []).shape == (0, 30)


def test_decoding_keeps_the_better_of_two_core_spans_and_never_covers_the_predicate():
    roles = ["ARG0", "ARG1", "ARGM-TMP"]
    labels = bio_labels(roles)
    # tokens: 0-1 ARG0, 2 predicate (the model wants it inside ARG0: blocked), 3 ARG0 again (weaker), 4 TMP, 5 TMP
    wanted = ["B-ARG0", "I-ARG0", "I-ARG0", "B-ARG0", "B-ARGM-TMP", "B-ARGM-TMP"]
    confidence = [0.9, 0.9, 0.9, 0.6, 0.8, 0.8]
    probs = numpy.full((6, len(labels)), 0.01)
    for t, (label, p) in enumerate(zip(wanted, confidence)):
        probs[t, labels.index(label)] = p
    probs /= probs.sum(axis=1, keepdims=True)
    arguments = decode_arguments(numpy.log(probs), roles, head=2)
    assert [(r, s, e) for r, s, e, _ in arguments] == [("ARG0", 0, 2), ("ARGM-TMP", 4, 5), ("ARGM-TMP", 5, 6)]
    assert all(not (s <= 2 < e) for _, s, e, _ in arguments)
    assert all(0 < score <= 1 for *_, score in arguments)


def test_bio_round_trip():
    roles = ["ARGM-TMP", "ARGM-LOC", "ARGM-MNR"]
    spans = [(0, 0, 2), (2, 3, 4), (1, 5, 8), (1, 8, 9)]
    path = spans_to_bio(9, spans)
    assert well_formed(path)
    certain = numpy.zeros((9, len(bio_labels(roles))))  # log 1: every label has probability 1
    assert decode_arguments_batch(certain[None], path[None], roles) == [[(roles[r], s, e, 1.0) for r, s, e in spans]]


def reference_decoding(log_probs, path, roles):
    """decode_arguments spelled out one token at a time."""
    spans, start, role = [], None, None
    for i, label in enumerate(list(path) + [0]):
        if label == 0 or label % 2 == 1:
            if start is not None:
                spans.append(
                    (roles[role], start, i, float(numpy.exp(log_probs[numpy.arange(start, i), path[start:i]]).mean()))
                )
                start = None
            if label % 2 == 1:
                start, role = i, (label - 1) // 2
    best = {}
    for span in spans:
        if CORE_ROLE.match(span[0]) and (span[0] not in best or span[3] > best[span[0]][3]):
            best[span[0]] = span
    return [s for s in spans if not CORE_ROLE.match(s[0]) or best[s[0]] is s]


def test_batched_decoding_equals_the_token_by_token_one():
    rng = numpy.random.default_rng(2)
    roles = ["ARG0", "ARG1", "ARG2", "ARGM-TMP", "ARGM-LOC"]
    lengths = [1, 5, 40, 17, 40, 3]
    log_probs = numpy.stack(
        [numpy.pad(random_log_probs(rng, n, 1 + 2 * len(roles)), ((0, 40 - n), (0, 0))) for n in lengths]
    )
    blocked = [0, 2, -1, 16, 5, 1]
    paths = viterbi_bio_batch(log_probs, lengths, blocked)
    decoded = decode_arguments_batch(log_probs, paths, roles)
    assert sum(map(len, decoded)) > 10
    for k, n in enumerate(lengths):
        expected = reference_decoding(log_probs[k, :n], paths[k, :n], roles)
        assert [a[:3] for a in decoded[k]] == [a[:3] for a in expected]
        numpy.testing.assert_allclose([a[3] for a in decoded[k]], [a[3] for a in expected], rtol=1e-6)
        assert decode_arguments(log_probs[k, :n], roles, blocked[k]) == decoded[k]
    assert decode_arguments_batch(log_probs[:0], paths[:0], roles) == []
