"""Converted sentences -> spaCy Docs (one Doc per document), and the counts a report shows."""

from collections import Counter
from typing import List

from spacy.tokens import Doc
from spacy.vocab import Vocab

from albert_srl.components.frames import PREDICATE_TYPES, FrameSpec, get_frames, set_frames

from .props import Sentence


def sentences_to_doc(vocab: Vocab, sentences: List[Sentence], doc_id: str = "", genre: str = "") -> Doc:
    """Join a document's sentences into one Doc with sentence boundaries, tags, lemmas and frames."""
    words, spaces, tags, lemmas, sent_starts, frames = [], [], [], [], [], []
    for sentence in sentences:
        offset = len(words)
        words.extend(sentence.words)
        spaces.extend(sentence.spaces)
        if spaces:
            spaces[-1] = True  # a sentence never runs into the next one
        tags.extend(sentence.tags)
        lemmas.extend(sentence.lemmas)
        sent_starts.extend([True] + [False] * (len(sentence.words) - 1))
        for frame in sentence.frames:
            frames.append(
                FrameSpec(
                    head=frame.head + offset,
                    sense=frame.sense,
                    predicate=(frame.predicate[0] + offset, frame.predicate[1] + offset),
                    predicate_type=frame.predicate_type,
                    arguments=[(role, start + offset, end + offset) for role, start, end in frame.arguments],
                )
            )
    if spaces:
        spaces[-1] = False
    syntax = document_syntax(sentences)
    doc = Doc(
        vocab,
        words=words,
        spaces=spaces,
        tags=tags or None,
        lemmas=lemmas or None,
        sent_starts=sent_starts or None,
        **syntax,
    )
    set_frames(doc, frames)
    doc.user_data["doc_id"] = doc_id
    doc.user_data["genre"] = genre
    return doc


def document_syntax(sentences: List[Sentence]) -> dict:
    """Doc arguments `pos`, `morphs`, `heads` (doc indices) and `deps` when every sentence has a
    UD tree; none otherwise: spaCy reads a Doc's sentences off its tree, so a tree with holes
    would move the sentence boundaries."""
    if not sentences or any(sentence.syntax is None for sentence in sentences):
        return {}
    pos, morphs, heads, deps = [], [], [], []
    for sentence in sentences:
        offset = len(heads)
        pos.extend(sentence.syntax.pos)
        morphs.extend(sentence.syntax.morphs)
        heads.extend(head + offset for head in sentence.syntax.heads)
        deps.extend(sentence.syntax.deps)
    return {"pos": pos, "morphs": morphs, "heads": heads, "deps": deps}


def empty_counts() -> dict:
    return {
        "documents": 0,
        "sentences": 0,
        "sentences_with_syntax": 0,
        "tokens": 0,
        "predicates": 0,
        "predicates_by_type": {t: 0 for t in PREDICATE_TYPES},
        "arguments": 0,
        "arguments_by_role": {},
    }


def add_doc_counts(counts: dict, doc: Doc) -> None:
    """Add one Doc's documents/sentences/tokens/predicates/arguments to `counts` (in place)."""
    counts["documents"] += 1
    n_sentences = sum(1 for _ in doc.sents) if len(doc) else 0
    counts["sentences"] += n_sentences
    counts["sentences_with_syntax"] += n_sentences if doc.has_annotation("DEP") else 0
    counts["tokens"] += len(doc)
    roles: Counter = Counter(counts["arguments_by_role"])
    for frame in get_frames(doc):
        counts["predicates"] += 1
        counts["predicates_by_type"][frame.predicate_type] = (
            counts["predicates_by_type"].get(frame.predicate_type, 0) + 1
        )
        counts["arguments"] += len(frame.arguments)
        roles.update(a.role for a in frame.arguments)
    counts["arguments_by_role"] = dict(sorted(roles.items(), key=lambda kv: (-kv[1], kv[0])))


def merge_counts(total: dict, part: dict) -> None:
    """Add the counts of `part` into `total` (in place)."""
    for key in ("documents", "sentences", "sentences_with_syntax", "tokens", "predicates", "arguments"):
        total[key] += part[key]
    for key in ("predicates_by_type", "arguments_by_role"):
        merged = Counter(total[key])
        merged.update(part[key])
        total[key] = dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))
