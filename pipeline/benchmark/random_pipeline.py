"""`random-pipeline`: an SRL pipeline of a config's shape with random weights, to time a shape not
yet trained (`floor --random-head` and `trf-reference --albert-base-config` build theirs with it)."""

from pathlib import Path
from typing import Optional

import spacy
import typer
from spacy.tokens import DocBin
from spacy.training import Example
from wasabi import msg

from albert_srl.pipeline.benchmark.pipelines import precision_overrides
from albert_srl.pipeline.encoder import build_random_albert


def random_pipeline(
    config_path: Path = typer.Argument(
        ..., help="The pipeline's config (configs/srl_trf_gpu.cfg: albert-base-v2's shape)"
    ),
    corpus: Path = typer.Argument(
        ..., help="A .spacy corpus with frames: its first N_DOCS documents set up the labels"
    ),
    output: Path = typer.Argument(..., help="Folder to write the pipeline to"),
    spm: Optional[Path] = typer.Option(
        None, help="SentencePiece model for a random albert-base-v2 encoder, written beside OUTPUT"
    ),
    encoder: Optional[Path] = typer.Option(None, help="An encoder folder to use instead of a random albert-base-v2"),
    n_docs: int = typer.Option(50, min=1, help="Documents whose labels the head is built for"),
) -> None:
    """An SRL pipeline of CONFIG_PATH's shape with random weights, for timing a shape not yet trained
    (speed does not depend on the weights; time it with --gold-structure, since a random senter and
    predicate finder mark random sentences and predicates)."""
    if encoder is None and spm is None:
        msg.fail(
            "Give --spm (a SentencePiece model, for a random albert-base-v2) or --encoder (an encoder folder)", exits=1
        )
    if encoder is None:
        encoder = build_random_albert(output.parent / "albert-base-random", spm, shape="base")
    overrides = {
        "paths.encoder": str(encoder),
        "components.transformer.model.mixed_precision": False,
        **precision_overrides("fp32"),
    }
    nlp = spacy.util.load_model_from_config(
        spacy.util.load_config(config_path, overrides=overrides, interpolate=True), auto_fill=True, validate=True
    )
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    examples = [Example(nlp.make_doc(ref.text), ref) for ref in refs[:n_docs]]
    nlp.initialize(lambda: examples)
    nlp.to_disk(output)
