"""Corpus reader that keeps the corpus's own tokens (so predicates pair by position when scoring)."""

from pathlib import Path
from typing import Callable, Iterable, Iterator, List

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

from albert_srl.components.frames import FrameSpec, frame_specs, set_frames


@registry.readers("albert_srl.GoldTokensCorpus.v1")
def create_gold_tokens_corpus(
    path: Path, max_length: int = 0, limit: int = 0
) -> Callable[[Language], Iterable[Example]]:
    """Examples whose predicted Doc has the reference's words and spaces (no re-tokenization).

    Docs longer than `max_length` tokens are cut at sentence boundaries into pieces of at most
    that length (0 = never), which bounds the memory of a training batch.
    """

    def read(nlp: Language) -> Iterator[Example]:
        count = 0
        for doc in DocBin().from_disk(path).get_docs(nlp.vocab):
            for piece in split_doc(doc, max_length):
                yield Example(
                    Doc(nlp.vocab, words=[t.text for t in piece], spaces=[bool(t.whitespace_) for t in piece]), piece
                )
                count += 1
                if limit and count >= limit:
                    return

    return read


def split_doc(doc: Doc, max_length: int) -> List[Doc]:
    """Cut a Doc at sentence boundaries into pieces of at most `max_length` tokens, frames kept."""
    if not max_length or len(doc) <= max_length or not doc.has_annotation("SENT_START"):
        return [doc]
    bounds, start = [], 0
    for sent in doc.sents:
        if sent.end - start > max_length and sent.start > start:
            bounds.append((start, sent.start))
            start = sent.start
    bounds.append((start, len(doc)))
    specs = frame_specs(doc)
    pieces = []
    for start, end in bounds:
        piece = doc[start:end].as_doc()
        inside = [
            FrameSpec(
                f.head - start,
                f.sense,
                (f.predicate[0] - start, f.predicate[1] - start),
                f.predicate_type,
                [(r, s - start, e - start) for r, s, e in f.arguments if start <= s and e <= end],
            )
            for f in specs
            if start <= f.head < end
        ]
        set_frames(piece, inside)
        piece.user_data.update(doc.user_data)
        pieces.append(piece)
    return pieces
