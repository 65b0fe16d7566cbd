"""The encoder build: MLM + SOP + word-level distillation into an ALBERT, resume, and bad input."""

import json
import random
import re
from pathlib import Path

import pytest
from common import TEXTS, make_nlp
from typer.testing import CliRunner

from albert_srl.pipeline.pretrain import app
from albert_srl.pipeline.pretrain_data import ChunkEncoder, split_sentences
from albert_srl.pipeline.pretrain_model import layer_map, pool_words

runner = CliRunner()
SUBJECTS = ["John", "Mary", "The man", "A teacher", "Her brother", "The committee"]
VERBS = ["gave", "sold", "showed", "sent", "lent", "promised"]
OBJECTS = ["the book", "a letter", "the car", "some money", "an old map", "the keys"]


def story(rng: random.Random, n: int) -> str:
    return " ".join(
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(SUBJECTS).lower()} {rng.choice(OBJECTS)} yesterday."
        for _ in range(n)
    )


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    """A WikiExtractor-style file of 40 short articles and a plain text file."""
    root = tmp_path_factory.mktemp("texts")
    rng = random.Random(0)
    articles = [
        f'<doc id="{i}" url="x" title="T{i}">\nT{i}\n\n{story(rng, 6)}\n{story(rng, 4)}\n</doc>' for i in range(40)
    ]
    (root / "wiki_00").write_text("\n".join(articles) + "\n", encoding="utf8")
    (root / "notes.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf8")
    return root


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    """A tiny random BERT with a WordPiece vocabulary of the test texts: stands in for MiniLM."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("teacher")
    words = sorted(
        {w.lower() for t in TEXTS + SUBJECTS + VERBS + OBJECTS + ["yesterday ."] for w in re.findall(r"\w+|[^\w\s]", t)}
    )
    vocab = (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + words
        + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
        + list("abcdefghijklmnopqrstuvwxyz")
    )
    (root / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(root)
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(root)
    return root


def build(output: Path, texts: Path, spm: Path, teacher: Path, *extra: str):
    args = [
        str(output),
        "--text",
        str(texts),
        "--spm",
        str(spm),
        "--teacher",
        str(teacher),
        "--shape",
        "tiny",
        "--batch-size",
        "8",
        "--max-words",
        "24",
        "--minutes",
        "5",
        *extra,
    ]
    return runner.invoke(app, args)


def log_rows(output: Path):
    return [json.loads(line) for line in (output / "pretrain-log.jsonl").read_text().splitlines()]


def test_chunks_align_both_tokenizers_to_the_same_words(tiny_albert, tiny_teacher):
    from transformers import AlbertTokenizer, AutoTokenizer

    student = AlbertTokenizer.from_pretrained(tiny_albert)
    teacher = AutoTokenizer.from_pretrained(tiny_teacher, use_fast=True)
    encoder = ChunkEncoder(student, teacher, max_words=64, max_pieces=128)
    chunks = list(
        encoder.chunks(
            "Mary gave the man the book yesterday. She didn't look it up, which surprised him.", random.Random(1)
        )
    )
    assert len(chunks) == 1
    chunk = chunks[0]
    first_sentence, second_sentence = (
        "mary gave the man the book yesterday .".split(),
        "she didn ' t look it up , which surprised him .".split(),
    )
    # the two segments are the two sentences; sentence order decides which comes first
    words = second_sentence + first_sentence if chunk.swapped else first_sentence + second_sentence
    assert chunk.n_words == len(words)
    # every word has pieces on both sides; specials have none
    assert set(w for w in chunk.student_words if w >= 0) == set(range(len(words)))
    assert set(w for w in chunk.teacher_words if w >= 0) == set(range(len(words)))
    assert chunk.student_ids[0] == student.cls_token_id and chunk.student_ids.count(student.sep_token_id) == 2
    # the pieces of each word, read back, spell the word (on the student's side too)
    for i, word in enumerate(words):
        pieces = [student.convert_ids_to_tokens(t) for t, w in zip(chunk.student_ids, chunk.student_words) if w == i]
        assert "".join(pieces).replace("▁", "") == word
        t_pieces = [teacher.convert_ids_to_tokens(t) for t, w in zip(chunk.teacher_ids, chunk.teacher_words) if w == i]
        assert "".join(t_pieces).replace("##", "") == word
    first_segment = [w for w, typ in zip(chunk.student_words, chunk.student_types) if typ == 0 and w >= 0]
    assert max(first_segment) == len(words[: len(second_sentence if chunk.swapped else first_sentence)]) - 1
    swaps = [
        c.swapped
        for seed in range(40)
        for c in encoder.chunks("One short sentence here. And a second one.", random.Random(seed))
    ]
    assert 0 < sum(swaps) < len(swaps)  # both orders occur


def test_piece_offsets_are_bytes_not_characters(tiny_albert):
    from transformers import AlbertTokenizer

    encoder = ChunkEncoder(AlbertTokenizer.from_pretrained(tiny_albert))
    # multi-byte characters before the words shift SentencePiece's byte offsets past character offsets
    words, ids, piece_words = encoder.encode_sentence("Zürich — “東京” who did where")
    assert words == ["zurich", "—", "“", "東京", "”", "who", "did", "where"]
    assert len(ids) == len(piece_words) and min(piece_words) == 0
    # an unknown piece covering several words ("“東京”") goes to its last word; all other words keep their pieces
    assert set(piece_words) == set(range(len(words))) - {3}
    assert [encoder.tokenizer.convert_ids_to_tokens(i) for i, w in zip(ids, piece_words) if w == 7] == ["▁where"]


def test_pool_words_and_layer_map():
    import torch

    states = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [9.0, 9.0]]])
    pooled, counts = pool_words(states, torch.tensor([[0, 0, 1, -1]]), 3)
    assert pooled.tolist() == [[2.0, 1.0], [5.0, 4.0], [0.0, 0.0]] and counts.tolist() == [2.0, 1.0, 0.0]
    assert layer_map(6, 6) == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]
    assert layer_map(4, 2) == [(2, 1), (4, 2)]
    assert split_sentences("One here. Two there! (Three) now?\nFour") == [
        "One here.",
        "Two there!",
        "(Three) now?",
        "Four",
    ]


def test_build_learns_and_writes_an_albert_that_spacy_loads(tmp_path, texts, tiny_albert, tiny_teacher):
    from transformers import AlbertModel, AutoTokenizer

    out = tmp_path / "student"
    result = build(out, texts, tiny_albert / "spiece.model", tiny_teacher, "--max-steps", "80", "--lr", "0.003")
    assert result.exit_code == 0, result.output
    rows = log_rows(out)
    assert rows[-1]["step"] == 80
    first, last = rows[0], rows[-1]
    assert last["distill"] < 0.7 * first["distill"], (first, last)
    assert last["mlm"] < first["mlm"]  # (sentence order is not learnable here: the stories' sentences are independent)
    metrics = json.loads((out / "pretrain-metrics.json").read_text())
    assert metrics["steps"] == 80 and metrics["words_seen"] > 80 * 8 * 5
    assert 0 < metrics["student_parameters"] and 0 < metrics["teacher_parameters"]
    assert 0 <= metrics["heldout"]["mlm_acc"] <= 1 and 0 <= metrics["heldout"]["sop_acc"] <= 1
    # ALBERT proper: factorized embeddings, one shared layer group, ALBERT's SentencePiece tokenizer
    model = AlbertModel.from_pretrained(out, local_files_only=True)
    assert model.config.embedding_size < model.config.hidden_size and len(model.encoder.albert_layer_groups) == 1
    assert type(AutoTokenizer.from_pretrained(out, use_fast=False)).__name__ == "AlbertTokenizer"
    assert (out / "spiece.model").read_bytes() == (tiny_albert / "spiece.model").read_bytes()
    assert "masked LM + sentence-order prediction + word-level distillation" in (out / "ENCODER.md").read_text()
    # the transformer component loads it by path and the SRL pipeline runs on it
    nlp = make_nlp("srl_trf.cfg", {"components.srl.model.hidden_width": 32}, out)
    nlp.initialize()
    doc = nlp("John gave Mary the book yesterday.")
    assert doc._.trf_data.tensors[0].shape[-1] == model.config.hidden_size and "srl_predicates" in doc.spans


def test_interrupted_build_resumes_and_settings_must_match(tmp_path, texts, tiny_albert, tiny_teacher):
    out = tmp_path / "student"
    spm = tiny_albert / "spiece.model"
    assert build(out, texts, spm, tiny_teacher, "--max-steps", "10").exit_code == 0
    result = build(out, texts, spm, tiny_teacher, "--max-steps", "20")
    assert result.exit_code == 0, result.output
    assert "Resuming the build" in result.output and "at step 10" in result.output
    steps = [r["step"] for r in log_rows(out)]
    assert steps == [10, 20]  # the second run went on from step 10, not from scratch
    result = build(out, texts, spm, tiny_teacher, "--max-steps", "30", "--max-words", "16")
    assert result.exit_code == 1 and "other settings (max_words)" in " ".join(result.output.split())
    assert build(out, texts, spm, tiny_teacher, "--max-steps", "5", "--max-words", "16", "--overwrite").exit_code == 0


def test_build_interrupted_by_ctrl_c_resumes_exactly(tmp_path, texts, tiny_albert, tiny_teacher, monkeypatch):
    import torch
    from transformers import AlbertModel

    from albert_srl.pipeline.pretrain_model import Pretrainer

    spm = tiny_albert / "spiece.model"
    assert build(tmp_path / "straight", texts, spm, tiny_teacher, "--max-steps", "12").exit_code == 0
    # Ctrl-C at the start of step 7: a checkpoint of step 6 is saved, the command says how to resume
    losses, calls = Pretrainer.losses, []

    def interrupting(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return losses(self, *args, **kwargs)

    monkeypatch.setattr(Pretrainer, "losses", interrupting)
    result = build(tmp_path / "resumed", texts, spm, tiny_teacher, "--max-steps", "12")
    assert result.exit_code == 130 and "Run the same command again to resume" in " ".join(result.output.split())
    monkeypatch.setattr(Pretrainer, "losses", losses)
    result = build(tmp_path / "resumed", texts, spm, tiny_teacher, "--max-steps", "12")
    assert result.exit_code == 0 and "at step 6" in result.output
    straight = AlbertModel.from_pretrained(tmp_path / "straight").state_dict()
    resumed = AlbertModel.from_pretrained(tmp_path / "resumed").state_dict()
    for name, value in straight.items():
        assert torch.allclose(value, resumed[name], atol=1e-6), name  # same data, masks, dropout and schedule
    same = lambda rows: [(r["step"], r["words"], r["lr"]) for r in rows]  # noqa: E731 (loss means cover the steps of each run)
    assert same(log_rows(tmp_path / "resumed")) == same(log_rows(tmp_path / "straight"))


def test_mask_words_never_masks_special_pieces_or_padding():
    import torch

    from albert_srl.pipeline.pretrain_data import Chunk, collate
    from albert_srl.pipeline.pretrain_model import mask_words

    chunks = [
        Chunk([2, 10, 11, 3, 12, 3], [0, 0, 0, 0, 1, 1], [-1, 0, 0, -1, 1, -1], [], [], [], 2, 0),
        Chunk([2, 13, 3, 14, 3], [0, 0, 0, 1, 1], [-1, 0, -1, 1, -1], [], [], [], 2, 1),
    ]
    batch = collate(chunks, pad_id=0, teacher_pad_id=0, device="cpu")
    assert batch["n_words"] == 4 and batch["s_words"][1].tolist()[:5] == [
        -1,
        2,
        -1,
        3,
        -1,
    ]  # word indices offset per chunk
    assert batch["s_ids"].shape[1] == 16 and batch["s_mask"].sum() == 11  # padded to a length bucket
    for seed in range(20):
        masked, at, targets = mask_words(
            batch, 4, 0.5, mask_id=4, vocab_size=20, generator=torch.Generator().manual_seed(seed)
        )
        assert (batch["s_words"][at] >= 0).all() and at.any()  # only word pieces, never CLS/SEP/padding
        assert torch.equal(targets, batch["s_ids"][at]) and torch.equal(masked[~at], batch["s_ids"][~at])
        # whole words: both pieces of the first word are masked together or not at all
        assert at[0, 1] == at[0, 2]


def test_continue_pretraining_an_existing_albert_without_teacher(tmp_path, texts, tiny_albert):
    import torch
    from transformers import AlbertModel

    out = tmp_path / "adapted"
    result = runner.invoke(
        app,
        [
            str(out),
            "--text",
            str(texts),
            "--init",
            str(tiny_albert),
            "--teacher",
            "none",
            "--max-steps",
            "6",
            "--batch-size",
            "8",
            "--max-words",
            "24",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no teacher" in result.output
    before = AlbertModel.from_pretrained(tiny_albert).state_dict()
    after = AlbertModel.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()
    assert not torch.equal(before["embeddings.word_embeddings.weight"], after["embeddings.word_embeddings.weight"])


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "holds no text"),
        ("binary", "is not a text file"),
        ("latin1", "is not UTF-8 text"),
        ("missing", "does not exist"),
        ("parquet-column", "Cannot read column 'text'"),
        ("spm", "is not a SentencePiece model"),
        ("teacher", "Cannot load the teacher"),
        ("init", "Cannot load an ALBERT to continue"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, tiny_albert, tiny_teacher, texts, case, message):
    import pandas as pd

    text, spm, teacher, extra = texts, tiny_albert / "spiece.model", tiny_teacher, []
    if case == "empty":
        text = tmp_path / "empty.txt"
        text.write_text("  \n")
    elif case == "binary":
        text = tmp_path / "data.bin"
        text.write_bytes(b"PK\x03\x04\x00\x00binary")
    elif case == "latin1":
        text = tmp_path / "latin1.txt"
        text.write_bytes("café crème".encode("latin1"))
    elif case == "missing":
        text = tmp_path / "nowhere"
    elif case == "parquet-column":
        text = tmp_path / "store.parquet"
        pd.DataFrame({"id": [1], "body": ["Some text."]}).to_parquet(text)
    elif case == "spm":
        spm = tmp_path / "vocab.model"
        spm.write_text("not sentencepiece")
    elif case == "teacher":
        teacher = tmp_path / "no-teacher"
        teacher.mkdir()
    elif case == "init":
        extra = ["--init", str(tmp_path / "no-albert")]
    out = tmp_path / "out"
    result = build(out, text, spm, teacher, "--max-steps", "1", *extra)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split()), result.output
    assert not (out / "checkpoint").exists()


def test_student_embeddings_start_from_the_teachers(tiny_albert, tiny_teacher):
    import torch
    from transformers import AlbertConfig, AlbertForPreTraining, AlbertTokenizer

    from albert_srl.pipeline.pretrain_model import init_embeddings_from_teacher, load_teacher

    teacher, teacher_tokenizer = load_teacher(str(tiny_teacher))
    student_tokenizer = AlbertTokenizer.from_pretrained(tiny_albert)
    hidden = teacher.config.hidden_size
    # embedding size = hidden size: the PCA keeps everything, so the projection gives the teacher's vectors back
    config = AlbertConfig(
        vocab_size=len(student_tokenizer),
        embedding_size=hidden,
        hidden_size=hidden,
        num_attention_heads=2,
        intermediate_size=64,
        num_hidden_layers=1,
    )
    student = AlbertForPreTraining(config)
    assert init_embeddings_from_teacher(student, student_tokenizer, teacher, teacher_tokenizer) > 20
    mapping = student.albert.encoder.embedding_hidden_mapping_in
    t_emb = teacher.get_input_embeddings().weight
    for word in ("▁where", "▁who", "▁up"):
        piece = student_tokenizer.convert_tokens_to_ids(word)
        assert piece != student_tokenizer.unk_token_id
        back = mapping(student.albert.embeddings.word_embeddings.weight[piece])
        assert torch.allclose(back, t_emb[teacher_tokenizer.convert_tokens_to_ids(word[1:])], atol=1e-4)
    # a student whose hidden size differs from the teacher's keeps its random start
    other = AlbertForPreTraining(
        AlbertConfig(
            vocab_size=len(student_tokenizer),
            embedding_size=16,
            hidden_size=64,
            num_attention_heads=2,
            intermediate_size=64,
            num_hidden_layers=1,
        )
    )
    assert init_embeddings_from_teacher(other, student_tokenizer, teacher, teacher_tokenizer) == 0
