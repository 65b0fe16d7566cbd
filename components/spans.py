"""A span getter for the transformer that never hands it more wordpieces than it has positions."""

from typing import Callable, Iterable, List

from spacy.tokens import Doc, Span
from spacy_transformers.util import registry  # adds registry.span_getters


def piece_bound(token_text: str) -> int:
    """An upper bound on the wordpieces of one token: each piece covers at least one character,
    plus one for a word-start marker (SentencePiece `▁`, or WordPiece's `[UNK]`)."""
    return len(token_text) + 1


@registry.span_getters("albert_srl.bounded_strided_spans.v1")
def configure_bounded_strided_spans(
    window: int = 128, stride: int = 96, max_pieces: int = 500
) -> Callable[[Iterable[Doc]], List[List[Span]]]:
    """Strided windows of at most `window` tokens, shortened so that no window can exceed
    `max_pieces` wordpieces (ALBERT and BERT have 512 positions). A single token longer than
    that (a pasted blob) is left out of every window; its vector is zeros."""

    def get_spans(docs: Iterable[Doc]) -> List[List[Span]]:
        return [bounded_strided_spans(doc, window, stride, max_pieces) for doc in docs]

    return get_spans


def bounded_strided_spans(doc: Doc, window: int, stride: int, max_pieces: int) -> List[Span]:
    spans = []
    costs = [piece_bound(t.text) for t in doc]
    start, n = 0, len(doc)
    while start < n:
        if costs[start] > max_pieces:  # a token no window can hold
            start += 1
            continue
        end, total = start, 0
        while end < n and end - start < window and total + costs[end] <= max_pieces:
            total += costs[end]
            end += 1
        spans.append(doc[start:end])
        if end >= n:
            break
        if costs[end] > max_pieces:  # the window stopped at an unholdable token: jump to it
            start = end
            continue
        # keep the configured overlap ratio for shortened windows
        start = max(start + 1, min(end, start + (end - start) * stride // window))
    return spans
