"""The settings of an encoder build and the error for bad input (shared by the pretrain modules)."""

from dataclasses import dataclass
from typing import Dict, List, Optional


class PretrainError(Exception):
    """Bad input found before any long work: the message says what and what to do."""


@dataclass
class PretrainSettings:
    texts: List[str]
    text_column: str = "text"
    spm: Optional[str] = None
    init: Optional[str] = None
    teacher: Optional[str] = None  # None: no distillation
    shape: str = "cpu"
    minutes: float = 60.0
    max_steps: int = 0
    batch_size: int = 32
    max_words: int = 64
    # chunks with more pieces on either side are dropped, and counted (0: twice max_words, within 128-512)
    max_pieces: int = 0
    lr: float = 5e-4
    warmup: float = 0.05
    mlm_probability: float = 0.15
    mlm_weight: float = 0.5
    sop_weight: float = 1.0
    eval_chunks: int = 256
    precision: str = "auto"
    seed: int = 0
    teacher_embeddings: bool = True  # start a new student's embeddings from the teacher's

    def resume_key(self) -> Dict[str, object]:
        return {k: getattr(self, k) for k in RESUME_KEYS}

    def piece_limit(self) -> int:
        """The longest chunk in sub-word pieces on either side."""
        return self.max_pieces or min(512, max(128, 2 * self.max_words))


# what a resumed build must share with the one it continues (the budget and rates may change)
RESUME_KEYS = (
    "texts",
    "text_column",
    "spm",
    "init",
    "teacher",
    "teacher_embeddings",
    "shape",
    "batch_size",
    "max_words",
    "max_pieces",
    "seed",
)
