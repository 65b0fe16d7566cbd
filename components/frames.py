"""How SRL frames live on a spaCy Doc, and a reader for them.

Layout (round-trips through DocBin and `nlp.to_disk`, needs no `user_data`):

- `doc.spans["srl_predicates"]`: one span per predicate. `label_` is the roleset (`give.01`),
  `kb_id_` the predicate type (`verbal`, `nominal`, `adjectival`, `other`) and `id_` the frame
  key: the doc index of the predicate's head token, as a string.
- `doc.spans["srl_arguments"]`: one span per argument piece. `label_` is the role (`ARG0`,
  `ARGM-TMP`, `C-ARG1`, `R-ARG0`, `C-V` for a continued predicate) and `id_` the frame key of its
  predicate. A discontinuous argument is its first piece plus its `C-` pieces, in order.
- Either group may carry `attrs["scores"]`, one float per span, when a model wrote it.

`doc._.srl_frames` (or `get_frames(doc)`) gives the frames as `Frame` objects.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

PREDICATES_KEY = "srl_predicates"
ARGUMENTS_KEY = "srl_arguments"
PREDICATE_TYPES = ("verbal", "nominal", "adjectival", "other")


@dataclass
class Argument:
    role: str
    span: Span
    score: Optional[float] = None


@dataclass
class Frame:
    """One predicate with its sense and arguments (in document order)."""

    predicate: Span
    sense: str
    predicate_type: str
    head: int
    arguments: List[Argument] = field(default_factory=list)
    score: Optional[float] = None

    def __repr__(self) -> str:
        args = ", ".join(f"{a.role}={a.span.text!r}" for a in self.arguments)
        return f"Frame({self.predicate.text!r} {self.sense}: {args})"


def predicate_type_from_tag(tag: str) -> str:
    """Map a Penn Treebank tag of the predicate's head to its predicate type."""
    if tag.startswith("VB"):
        return "verbal"
    if tag.startswith("NN"):
        return "nominal"
    if tag.startswith("JJ"):
        return "adjectival"
    return "other"


@dataclass
class FrameSpec:
    """A frame in token offsets, before it is put on a Doc (readers produce these)."""

    head: int
    sense: str
    predicate: Tuple[int, int]
    predicate_type: str = "other"
    # (role, start, end) with end exclusive, in document token offsets
    arguments: List[Tuple[str, int, int]] = field(default_factory=list)


def set_frames(
    doc: Doc, frames: Sequence[FrameSpec], scores: Optional[Tuple[Sequence[float], Sequence[float]]] = None
) -> None:
    """Write frames onto `doc.spans` in the layout above (replacing what was there)."""
    predicates, arguments = [], []
    for frame in frames:
        key = str(frame.head)
        start, end = frame.predicate
        predicates.append(Span(doc, start, end, label=frame.sense, kb_id=frame.predicate_type, span_id=key))
        for role, a_start, a_end in frame.arguments:
            arguments.append(Span(doc, a_start, a_end, label=role, span_id=key))
    doc.spans[PREDICATES_KEY] = predicates
    doc.spans[ARGUMENTS_KEY] = arguments
    if scores is not None:
        doc.spans[PREDICATES_KEY].attrs["scores"] = list(map(float, scores[0]))
        doc.spans[ARGUMENTS_KEY].attrs["scores"] = list(map(float, scores[1]))


def get_frames(doc: Doc) -> List[Frame]:
    """Read the frames of a Doc, predicates in document order."""
    if PREDICATES_KEY not in doc.spans:
        return []
    pred_group = doc.spans[PREDICATES_KEY]
    pred_scores = pred_group.attrs.get("scores")
    frames = {}
    for i, span in enumerate(pred_group):
        # spans added by hand may lack the frame key: their start token is the key then
        frames[span.id_ or str(span.start)] = Frame(
            predicate=span,
            sense=span.label_,
            predicate_type=span.kb_id_ or "other",
            head=int(span.id_) if span.id_.isdigit() else span.start,
            score=None if pred_scores is None else float(pred_scores[i]),
        )
    if ARGUMENTS_KEY in doc.spans:
        arg_group = doc.spans[ARGUMENTS_KEY]
        arg_scores = arg_group.attrs.get("scores")
        for i, span in enumerate(arg_group):
            frame = frames.get(span.id_)
            if frame is not None:
                score = None if arg_scores is None else float(arg_scores[i])
                frame.arguments.append(Argument(span.label_, span, score))
    ordered = sorted(frames.values(), key=lambda f: f.head)
    for frame in ordered:
        frame.arguments.sort(key=lambda a: (a.span.start, a.span.end))
    return ordered


def frame_specs(doc: Doc) -> List[FrameSpec]:
    """The frames of a Doc as token-offset specs (the inverse of `set_frames`)."""
    return [
        FrameSpec(
            head=f.head,
            sense=f.sense,
            predicate=(f.predicate.start, f.predicate.end),
            predicate_type=f.predicate_type,
            arguments=[(a.role, a.span.start, a.span.end) for a in f.arguments],
        )
        for f in get_frames(doc)
    ]


def project_specs(specs: Sequence[FrameSpec], alignment) -> List[FrameSpec]:
    """Move frames to another tokenization of the same text through a spaCy alignment
    (`example.alignment.y2x` or `.x2y`); frames whose predicate does not map are dropped."""

    def mapped(start: int, end: int) -> Optional[Tuple[int, int]]:
        indices = [int(i) for t in range(start, end) for i in alignment[t]]
        return (min(indices), max(indices) + 1) if indices else None

    result = []
    for f in specs:
        head, predicate = mapped(f.head, f.head + 1), mapped(*f.predicate)
        if head is None or predicate is None:
            continue
        arguments = [(role, *span) for role, s, e in f.arguments if (span := mapped(s, e)) is not None]
        result.append(FrameSpec(head[0], f.sense, predicate, f.predicate_type, arguments))
    return result


def same_tokens(a: Doc, b: Doc) -> bool:
    return len(a) == len(b) and all(x.text == y.text for x, y in zip(a, b))


if not Doc.has_extension("srl_frames"):
    Doc.set_extension("srl_frames", getter=get_frames)
