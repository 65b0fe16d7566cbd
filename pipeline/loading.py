"""Loading a trained SRL pipeline for the steps that run one (`evaluate`, `annotate`)."""

from typing import Dict, Optional

import spacy
from spacy.language import Language


class PipelineLoadError(ValueError):
    """The model cannot be loaded or has no `srl` pipe; the message says which and what to do."""


def load_srl_pipeline(model: str, gpu_id: int = -1, overrides: Optional[Dict[str, object]] = None) -> Language:
    """`spacy.load(model)` (a folder or an installed package), on GPU `gpu_id` if >= 0, checked to
    have an `srl` pipe."""
    try:
        if gpu_id >= 0:
            spacy.require_gpu(gpu_id)
        nlp = spacy.load(model, config=overrides or {})
    except Exception as err:  # spaCy raises OSError, ValueError, KeyError, ... for bad models
        raise PipelineLoadError(
            f"Cannot load the pipeline {model!r}: {type(err).__name__}: {err}. "
            "Train one first (spacy project run train) or pass a model folder or package."
        ) from err
    if "srl" not in nlp.pipe_names:
        raise PipelineLoadError(
            f"The pipeline {model!r} has no 'srl' component (it has: {', '.join(nlp.pipe_names) or 'none'})"
        )
    return nlp
