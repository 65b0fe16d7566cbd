import spacy
from spacy.tokens import DocBin

from albert_srl.components.frames import ARGUMENTS_KEY, PREDICATES_KEY, FrameSpec, frame_specs, get_frames, set_frames


def make_doc(nlp):
    doc = nlp("The man , he said , left .")
    frames = [
        FrameSpec(
            head=4,
            sense="say.01",
            predicate=(4, 5),
            predicate_type="verbal",
            arguments=[("ARG1", 0, 2), ("ARG0", 3, 4), ("C-ARG1", 6, 7)],
        ),
        FrameSpec(head=6, sense="leave.01", predicate=(6, 7), predicate_type="verbal", arguments=[("ARG0", 0, 2)]),
    ]
    set_frames(doc, frames, scores=([0.9, 0.8], [0.7, 0.6, 0.5, 0.4]))
    return doc, frames


def test_frames_read_back_in_order():
    nlp = spacy.blank("en")
    doc, frames = make_doc(nlp)
    read = get_frames(doc)
    assert [f.sense for f in read] == ["say.01", "leave.01"]
    assert [(a.role, a.span.text) for a in read[0].arguments] == [
        ("ARG1", "The man"),
        ("ARG0", "he"),
        ("C-ARG1", "left"),
    ]
    assert doc._.srl_frames[1].arguments[0].span.text == "The man"
    assert frame_specs(doc) == frames


def test_frames_round_trip_docbin_with_scores():
    nlp = spacy.blank("en")
    doc, frames = make_doc(nlp)
    data = DocBin(docs=[doc]).to_bytes()
    (loaded,) = DocBin().from_bytes(data).get_docs(nlp.vocab)
    assert frame_specs(loaded) == frames
    assert loaded.spans[PREDICATES_KEY].attrs["scores"] == [0.9, 0.8]
    read = get_frames(loaded)
    assert read[0].score == 0.9 and read[0].arguments[2].score == 0.5


def test_doc_without_frames():
    nlp = spacy.blank("en")
    doc = nlp("No frames here .")
    assert get_frames(doc) == []
    set_frames(doc, [])
    assert len(doc.spans[PREDICATES_KEY]) == 0 and len(doc.spans[ARGUMENTS_KEY]) == 0
