"""Training targets of the srl pipe: the reference frames in the predicted docs' token offsets, as
the arrays its losses read."""

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy
from spacy.training import Example

from albert_srl.components.decoding import spans_to_bio
from albert_srl.components.frames import PREDICATE_TYPES, FrameSpec, frame_specs, project_specs, same_tokens

PREDICATE_LABELS = ("O",) + PREDICATE_TYPES


class TrainingTargets(NamedTuple):
    """A batch's targets: a predicate label per token (0: none), and per gold predicate its token (in
    the batch's concatenated offsets), its sense index (-100: unseen at initialize), its window and
    the BIO label ids of its arguments within the window."""

    pred_labels: numpy.ndarray
    heads: List[int]
    senses: List[int]
    windows: List[Tuple[int, int]]
    bios: List[numpy.ndarray]


def training_targets(
    examples: Sequence[Example], role_index: Dict[str, int], sense_index: Dict[str, int], windows_of: Callable
) -> TrainingTargets:
    """`windows_of(doc, heads, sent_starts)` gives each predicate's window, as at prediction."""
    offset = 0
    pred_labels, heads, senses, windows, bios = [], [], [], [], []
    for eg in examples:
        doc = eg.predicted
        labels = numpy.zeros((len(doc),), dtype="int64")
        specs = gold_specs_for(eg)
        doc_windows = windows_of(doc, [f.head for f in specs], gold_sent_starts(eg))
        for frame, (start, end) in zip(specs, doc_windows):
            labels[frame.head] = PREDICATE_LABELS.index(frame.predicate_type)
            heads.append(offset + frame.head)
            senses.append(sense_index.get(frame.sense, -100))
            windows.append((offset + start, offset + end))
            spans = [
                (role_index[role], s - start, e - start)
                for role, s, e in frame.arguments
                if role in role_index and start <= s and e <= end
            ]
            bios.append(spans_to_bio(end - start, spans))
        pred_labels.append(labels)
        offset += len(doc)
    return TrainingTargets(
        numpy.concatenate(pred_labels) if pred_labels else numpy.zeros((0,), dtype="int64"),
        heads,
        senses,
        windows,
        bios,
    )


def gold_specs_for(eg: Example) -> List[FrameSpec]:
    """The reference frames in the predicted doc's token offsets."""
    specs = frame_specs(eg.reference)
    if same_tokens(eg.predicted, eg.reference):
        return specs
    return project_specs(specs, eg.alignment.y2x)


def gold_sent_starts(eg: Example) -> Optional[List[bool]]:
    """Sentence starts for the predicted doc: the reference's, mapped through the alignment."""
    if not eg.reference.has_annotation("SENT_START"):
        return None
    starts = [False] * len(eg.predicted)
    y2x = eg.alignment.y2x
    for sent in eg.reference.sents:
        mapped = [int(i) for i in y2x[sent.start]]
        if mapped:
            starts[mapped[0]] = True
    return starts
