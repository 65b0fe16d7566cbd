"""Corpus conversion: the EWT fixture, the CoNLL-2005/2012 fixtures, bad input and the real corpus."""

import json
from pathlib import Path

import pytest
import spacy
from common import EWT_DIR, FIXTURES, needs_ewt
from spacy.tokens import DocBin
from typer.testing import CliRunner

from albert_srl.components.frames import get_frames
from albert_srl.corpora.conll import read_conll05, read_conll12
from albert_srl.corpora.ewt import UDWord, align_tokens, is_tree
from albert_srl.corpora.props import normalize_role
from albert_srl.pipeline.convert import app

runner = CliRunner()


def convert(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    result.text = " ".join(result.output.split())  # messages wrap at the terminal width
    return result


def load(path: Path):
    nlp = spacy.blank("en")
    return list(DocBin().from_disk(path).get_docs(nlp.vocab))


def frames_of(doc):
    return [(f.sense, f.predicate.text, [(a.role, a.span.text) for a in f.arguments]) for f in get_frames(doc)]


def skel_file(root: Path, genre: str, doc: str) -> Path:
    return root / "propbank/data/google/ewt" / genre / "00" / f"{doc}.gold_skel"


def edit_line(path: Path, line_no: int, old: str, new: str) -> None:
    lines = path.read_text(encoding="utf8").split("\n")
    assert old in lines[line_no - 1], lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
    path.write_text("\n".join(lines), encoding="utf8")


def test_ewt_fixture(tmp_path):
    result = convert("ewt", FIXTURES / "ewt-mini", tmp_path)
    assert result.exit_code == 0, result.output
    (train,) = load(tmp_path / "train.spacy")
    (dev,) = load(tmp_path / "dev.spacy")
    (test,) = load(tmp_path / "test.spacy")
    assert train.text == "John gave Mary the book yesterday. She didn't look it up, which surprised him. Thanks"
    assert [s.text for s in train.sents][1] == "She didn't look it up, which surprised him."
    assert train.user_data == {"doc_id": "email/doc1.xml", "genre": "email"}
    assert [t.tag_ for t in train[:3]] == ["NNP", "VBD", "NNP"]
    assert frames_of(train) == [
        ("give.01", "gave", [("ARG0", "John"), ("ARG2", "Mary"), ("ARG1", "the book"), ("ARGM-TMP", "yesterday")]),
        ("look_up.01", "look", [("ARG0", "She"), ("ARGM-NEG", "n't"), ("ARG1", "it"), ("C-V", "up")]),
        ("surprise.01", "surprised", [("ARG0", "She didn't look it up"), ("R-ARG0", "which"), ("ARG1", "him")]),
    ]
    # PropBank splits `where-ever` into three tokens and keeps the multiword token `Im` whole
    assert [t.text for t in dev] == [
        "Have",
        "a",
        "good",
        "trip",
        "where",
        "-",
        "ever",
        "you",
        "end",
        "up",
        ".",
        "Im",
        "sure",
        ".",
    ]
    assert dev.text == "Have a good trip where-ever you end up. Im sure."
    assert frames_of(dev) == [
        ("trip.01", "trip", []),
        ("end_up.03", "end up", [("ARGM-LOC", "where-ever"), ("ARG1", "you")]),
        ("sure.02", "sure", [("ARG0", "Im")]),
    ]
    assert [f.predicate_type for f in get_frames(dev)] == ["nominal", "verbal", "adjectival"]
    assert frames_of(test)[0] == ("say.01", "said", [("ARG1", "The man"), ("ARG0", "he"), ("C-ARG1", "left")])
    report = json.loads((tmp_path / "report.json").read_text())
    assert {k: report["train"][k] for k in ("documents", "sentences", "tokens", "predicates", "arguments")} == {
        "documents": 1,
        "sentences": 3,
        "tokens": 19,
        "predicates": 3,
        "arguments": 11,
    }
    assert report["dev"]["predicates_by_type"] == {"verbal": 1, "nominal": 1, "adjectival": 1, "other": 0}
    assert report["test"]["arguments_by_role"] == {"ARG0": 2, "ARG1": 1, "C-ARG1": 1}
    assert report["train"]["genres"]["email"]["predicates"] == 3
    assert report["total"]["predicates"] == 8 and report["total"]["skipped_sentences"] == 0


def test_ewt_fixture_carries_ud_syntax(tmp_path):
    """UD's UPOS, features, heads and relations reach the tokens, through joined and split words;
    a document whose UD sentences are not trees (the test document's) has none."""
    assert convert("ewt", FIXTURES / "ewt-mini", tmp_path).exit_code == 0
    (train,) = load(tmp_path / "train.spacy")
    (dev,) = load(tmp_path / "dev.spacy")
    (test,) = load(tmp_path / "test.spacy")
    first = next(train.sents)
    assert [(t.text, t.pos_, t.dep_, t.head.text) for t in first] == [
        ("John", "PROPN", "nsubj", "gave"),
        ("gave", "VERB", "ROOT", "gave"),
        ("Mary", "PROPN", "iobj", "gave"),
        ("the", "DET", "det", "book"),
        ("book", "NOUN", "obj", "gave"),
        ("yesterday", "NOUN", "obl:tmod", "gave"),
        (".", "PUNCT", "punct", "gave"),
    ]
    assert str(train[1].morph) == "Mood=Ind|Tense=Past|VerbForm=Fin"
    assert [s.text for s in train.sents] == [s.text for s in load_sents(train)]  # the tree keeps the sentences
    # `where-ever` split in three: the first piece takes the word's relation, the others attach to it;
    # `Im` (I + m joined) takes the relation of the word whose head lies outside the pair
    assert [(t.text, t.dep_, t.head.i) for t in dev[4:9]] == [
        ("where", "advmod", 8),
        ("-", "goeswith", 4),
        ("ever", "goeswith", 4),
        ("you", "nsubj", 8),
        ("end", "advcl", 0),
    ]
    assert (dev[11].text, dev[11].pos_, dev[11].dep_, dev[11].head.text) == ("Im", "PRON", "nsubj", "sure")
    assert len(list(dev.sents)) == 2
    assert not test.has_annotation("DEP") and len(list(test.sents)) == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert [report[split]["sentences_with_syntax"] for split in ("train", "dev", "test")] == [3, 2, 0]


def load_sents(doc):
    """The Doc's sentences as its sentence starts alone say."""
    starts = [t.i for t in doc if t.is_sent_start] + [len(doc)]
    return [doc[a:b] for a, b in zip(starts, starts[1:])]


@pytest.mark.parametrize(
    "heads,tree",
    [([-1, 0, 0], True), ([1, -1, 1], True), ([-1, -1, 0], False), ([1, 2, 0], False), ([-1, 1], False)],
)
def test_is_tree(heads, tree):
    assert is_tree(heads) == tree


def test_joined_words_that_are_not_connected_leave_the_sentence_without_syntax():
    words = [
        UDWord("a", "a", "DT", False, upos="DET", head=2, deprel="det"),
        UDWord("b", "b", "NN", True, upos="NOUN", head=-1, deprel="root"),
        UDWord("c", "c", "NN", True, upos="NOUN", head=1, deprel="obj"),
    ]
    joined = align_tokens(["NN", "NN"], words)  # a+b joined: a's head (c) lies outside, and c's head is b
    assert joined is not None and [t.dep for t in joined] == ["", ""]
    assert [t.dep for t in align_tokens(["DT", "NN", "NN"], words)] == ["det", "root", "obj"]


@pytest.mark.parametrize(
    "line,old,new,error_line,reason",
    [
        (6, "(ARGM-TMP*)", "(ARGM-TMP*", 6, "never closes before the sentence ends"),
        (3, "(ARG2*)", "(ARG2*", 4, "opens while 'ARG2' (line 3) is still open"),
        (5, "*)", "*))", 5, "cannot read cell"),
        (4, "(ARG1*", "*", 5, "never opened (or closes twice)"),
        (2, "give.01", "-", 1, "0 rolesets but 1 predicate columns"),
        (6, "(ARGM-TMP*)", "", 6, "0 argument columns where the sentence has 1"),
        (7, "[WORD]      .  *           -            -           *", "[WORD]", 7, "malformed line: 4 columns"),
    ],
)
def test_ewt_bad_sentence_is_skipped_with_file_and_line(mini_ewt, tmp_path, line, old, new, error_line, reason):
    path = skel_file(mini_ewt, "email", "doc1.xml")
    edit_line(path, line, old, new)
    result = convert("ewt", mini_ewt, tmp_path / "out", "--min-recovery", "0")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (skip,) = report["train"]["skipped"]
    assert (skip["file"], skip["line"]) == (str(path), error_line)
    assert reason in skip["reason"]
    assert f"{path}:{skip['line']}" in result.output.replace("\n", "")
    (train,) = load(tmp_path / "out" / "train.spacy")
    assert train.text.startswith("She didn't")  # the other sentences are kept
    assert report["train"]["source_predicates"] == 3


def test_ewt_recovery_below_threshold_fails(mini_ewt, tmp_path):
    edit_line(skel_file(mini_ewt, "email", "doc1.xml"), 2, "give.01", "-")
    result = convert("ewt", mini_ewt, tmp_path / "out")
    assert result.exit_code == 1
    assert "predicates recovered" in result.text and "report.json" in result.text


def test_ewt_missing_ud_document_is_reported(mini_ewt, tmp_path):
    (mini_ewt / "ud/not-to-release/sources/answers/doc2.xml.conllu").unlink()
    convert("ewt", mini_ewt, tmp_path / "out", "--min-recovery", "0")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (skip,) = report["dev"]["skipped"]
    assert "no UD document" in skip["reason"] and skip["predicates"] == 3 and skip["arguments"] == 3
    assert report["dev"]["predicate_recovery"] == 0.0
    assert load(tmp_path / "out" / "dev.spacy") == []


def test_ewt_unalignable_sentence_is_reported(mini_ewt, tmp_path):
    ud = mini_ewt / "ud/not-to-release/sources/reviews/doc3.xml.conllu"
    text = (
        ud.read_text().replace("PRON\tPRP", "PRON\tVBZ").replace("DET\tDT", "DET\tVB").replace("NOUN\tNN", "NOUN\tCD")
    )
    ud.write_text(text.replace("PUNCT\t,", "PUNCT\tFW", 1))  # four tags in a row disagree: shifted tokens
    convert("ewt", mini_ewt, tmp_path / "out", "--min-recovery", "0")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (skip,) = report["test"]["skipped"]
    assert "tokens cannot be aligned" in skip["reason"] and skip["predicates"] == 2


def test_ewt_wrong_folder_is_a_clear_error(tmp_path):
    result = convert("ewt", tmp_path / "nowhere", tmp_path / "out")
    assert result.exit_code == 1
    assert "is not an EWT PropBank folder" in result.text and "spacy project assets" in result.text


def test_conll12_fixture():
    documents, skips = read_conll12(FIXTURES / "conll12" / "sample.v4_gold_conll")
    assert skips == []
    assert [doc_id for doc_id, _ in documents] == ["nw/wsj/00/wsj_0001_000", "nw/wsj/00/wsj_0001_001"]
    first = documents[0][1][0]
    assert first.words[8] == "(" and first.words[12] == ")"  # PTB escapes undone
    buy = first.frames[1]
    assert buy.sense == "buy.01" and buy.predicate == (5, 6) and buy.predicate_type == "verbal"
    assert buy.arguments == [("ARG0", 3, 4), ("ARGM-MOD", 4, 5), ("ARG1", 6, 8), ("ARG3", 8, 13)]
    assert documents[1][1][0].frames == []


def test_conll12_cli(tmp_path):
    result = convert("conll12", FIXTURES / "conll12", tmp_path / "c12.spacy")
    assert result.exit_code == 0, result.output
    docs = load(tmp_path / "c12.spacy")
    assert len(docs) == 2 and len(list(docs[0].sents)) == 2
    assert frames_of(docs[0])[2] == ("come.01", "came", [("ARG1", "Nobody")])
    report = json.loads((tmp_path / "c12.report.json").read_text())
    assert report["all"]["predicates"] == 3 and report["all"]["arguments"] == 7


def test_conll12_predicate_count_mismatch(tmp_path):
    text = (FIXTURES / "conll12" / "sample.v4_gold_conll").read_text()
    bad = tmp_path / "bad.v4_gold_conll"
    bad.write_text(text.replace("came    VBD  *  come  01", "came    VBD  *  come  - "))
    documents, skips = read_conll12(bad)
    (skip,) = skips
    assert skip.line == 17 and "0 predicates (frameset column) but 1 predicate columns" in skip.reason
    assert len(documents[0][1]) == 1  # the good sentence stays


def test_conll05_fixture():
    documents, skips = read_conll05(FIXTURES / "conll05" / "sample.txt", pos_column=1)
    assert skips == [] and len(documents) == 1
    first, second, third = documents[0][1]
    assert first.frames[0].sense == "think" and first.frames[0].arguments == [("ARG0", 0, 1), ("ARG1", 2, 5)]
    assert first.frames[1].arguments == [("ARG0", 2, 3), ("ARGM-TMP", 4, 5)]
    assert second.frames[0].arguments == [("ARG1", 0, 2), ("ARG0", 3, 4), ("C-ARG1", 6, 7)]
    assert third.frames == [] and third.words == ["Hi", "!"]


def test_conll05_cli_groups_sentences(tmp_path):
    result = convert("conll05", FIXTURES / "conll05" / "sample.txt", tmp_path / "c05.spacy", "--sentences-per-doc", "2")
    assert result.exit_code == 0, result.output
    docs = load(tmp_path / "c05.spacy")
    assert [len(list(d.sents)) for d in docs] == [2, 1]


def test_conll05_bad_bracket(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("John  NNP  -     (A0*\nleft  VBD  leave  (V*)\n")
    documents, skips = read_conll05(bad)
    (skip,) = skips
    assert skip.path == str(bad) and skip.line == 2 and "'V' opens while 'A0' (line 1) is still open" in skip.reason
    assert documents == []


def test_conll05_missing_input_is_a_clear_error(tmp_path):
    result = convert("conll05", tmp_path / "missing.txt", tmp_path / "out.spacy")
    assert result.exit_code == 1 and "does not exist" in result.text


@pytest.mark.parametrize(
    "role,expected",
    [
        ("A0", "ARG0"),
        ("AM-TMP", "ARGM-TMP"),
        ("C-A1", "C-ARG1"),
        ("R-AM-LOC", "R-ARGM-LOC"),
        ("AA", "ARGA"),
        ("V", "V"),
        ("C-V", "C-V"),
        ("ARG1", "ARG1"),
    ],
)
def test_normalize_role(role, expected):
    assert normalize_role(role) == expected


@needs_ewt
def test_real_ewt_corpus(tmp_path):
    result = convert("ewt", EWT_DIR, tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    total = report["total"]
    # reference counts of the raw files of EWT PropBank: 50,262 predicates, 100,495 arguments besides V
    assert total["source_predicates"] == 50262
    assert total["predicates"] >= 0.999 * 50262
    assert total["arguments"] >= 0.999 * 100495
    assert total["sentences"] >= 0.999 * 16579
    for split, reference in (("train", 40486), ("dev", 4977), ("test", 4799)):
        assert report[split]["source_predicates"] == reference
        assert report[split]["predicates"] >= 0.998 * reference
    assert total["documents"] == 1145
    assert total["predicates_by_type"]["verbal"] >= 0.999 * 38646
    assert total["predicates_by_type"]["nominal"] >= 0.999 * 8765
    assert total["predicates_by_type"]["adjectival"] >= 0.999 * 2850
    assert set(report["train"]["genres"]) == {"answers", "email", "newsgroup", "reviews", "weblog"}
    for skip in report["dev"]["skipped"] + report["test"]["skipped"] + report["train"]["skipped"]:
        assert skip["file"].endswith(".gold_skel") and skip["line"] > 0 and skip["reason"]
    # the words really fill the blanks: sentence texts match UD's `# text` lines
    docs = load(tmp_path / "dev.spacy")
    assert sum(len(get_frames(d)) for d in docs) == report["dev"]["predicates"]
    ud_texts = set()
    for path in (EWT_DIR / "ud/not-to-release/sources").rglob("*.conllu"):
        ud_texts.update(
            line[len("# text = ") :].rstrip("\n")
            for line in open(path, encoding="utf8")
            if line.startswith("# text = ")
        )
    sentences = [s.text for d in docs for s in d.sents]
    matched = sum(s in ud_texts for s in sentences)
    assert matched >= 0.998 * len(sentences)
