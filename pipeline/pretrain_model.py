"""The models of an encoder build: the ALBERT student, the BERT teacher and the losses of a batch.

The student is ALBERT proper (factorized embeddings, one transformer layer shared by all depths,
ALBERT's SentencePiece vocabulary) trained with masked LM and sentence-order prediction, plus
word-level distillation: the tokenizers differ, so each side's sub-word states are mean-pooled per
word and the student's pooled states at several depths are regressed on the teacher's
(standardized per dimension).
"""

import contextlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from albert_srl.components.transformer import cpu_bf16_supported
from albert_srl.pipeline.encoder import SHAPES, EncoderError, check_sentencepiece
from albert_srl.pipeline.pretrain_data import round_up
from albert_srl.pipeline.pretrain_settings import PretrainError, PretrainSettings

ROWS_MULTIPLE = 128  # the gathered masked positions and pooled words are padded to buckets too


# ---------------------------------------------------------------------------------------------
# Losses


def pool_words(states, word_index, n_words: int):
    """Mean of the sub-word states of each word: (batch, length, dim) -> (n_words, dim), counts."""
    flat = states.reshape(-1, states.shape[-1]).float()
    index = word_index.reshape(-1)
    keep = index >= 0
    sums = torch.zeros(n_words, flat.shape[-1], device=flat.device).index_add_(0, index[keep], flat[keep])
    counts = torch.zeros(n_words, device=flat.device).index_add_(
        0, index[keep], torch.ones_like(index[keep], dtype=torch.float)
    )
    return sums / counts.clamp(min=1).unsqueeze(-1), counts


def pad_rows(x, multiple: int = ROWS_MULTIPLE, value=0):
    """Pad dim 0 up to a multiple (fixed shapes for the CPU bf16 kernels)."""
    extra = round_up(x.shape[0], multiple) - x.shape[0]
    if extra == 0:
        return x
    return torch.cat([x, x.new_full((extra, *x.shape[1:]), value)])


def layer_map(student_layers: int, teacher_layers: int) -> List[Tuple[int, int]]:
    """(student hidden-state index, teacher hidden-state index) pairs, evenly spread over depth."""
    return [(round(t * student_layers / teacher_layers), t) for t in range(1, teacher_layers + 1)]


def mask_words(batch, n_words: int, probability: float, mask_id: int, vocab_size: int, generator):
    """Whole-word masking of the student's input: returns masked ids, positions and their targets."""
    ids, words = batch["s_ids"], batch["s_words"]
    chosen = torch.rand(max(n_words, 1), generator=generator, device="cpu").to(ids.device) < probability
    at = (words >= 0) & chosen[words.clamp(min=0)]
    if not at.any():  # at least one masked word per batch
        at = words == words[words >= 0][0]
    targets = ids[at]
    masked = ids.clone()
    roll = torch.rand(targets.shape, generator=generator, device="cpu").to(ids.device)
    replacement = torch.where(roll < 0.8, torch.full_like(targets, mask_id), targets)
    random_ids = torch.randint(5, vocab_size, targets.shape, generator=generator, device="cpu").to(ids.device)
    replacement = torch.where((roll >= 0.8) & (roll < 0.9), random_ids, replacement)
    masked[at] = replacement
    return masked, at, targets


class Losses:
    """Running means of the logged quantities."""

    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.counts: Dict[str, float] = {}

    def add(self, name: str, value: float, count: float = 1.0):
        self.sums[name] = self.sums.get(name, 0.0) + value * count
        self.counts[name] = self.counts.get(name, 0.0) + count

    def means(self) -> Dict[str, float]:
        return {k: self.sums[k] / max(self.counts[k], 1e-9) for k in self.sums}


class Pretrainer:
    """Student, teacher, optimizer and the loss of one batch."""

    def __init__(self, settings: PretrainSettings, student, tokenizer, teacher, device, autocast_dtype):
        self.settings = settings
        self.student = student.to(device)
        self.tokenizer = tokenizer
        self.teacher = teacher.to(device).eval() if teacher is not None else None
        self.device = device
        self.autocast_dtype = autocast_dtype
        hidden = student.config.hidden_size
        if teacher is not None:
            self.pairs = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
            # a linear map per matched depth: the student's space need not equal the teacher's
            self.projections = torch.nn.ModuleList(
                torch.nn.Linear(hidden, teacher.config.hidden_size) for _ in self.pairs
            ).to(device)
            self.teacher_mean = torch.zeros(len(self.pairs), teacher.config.hidden_size, device=device)
            self.teacher_std = torch.ones(len(self.pairs), teacher.config.hidden_size, device=device)
        else:
            self.pairs, self.projections = [], torch.nn.ModuleList()
        params = [p for p in list(self.student.parameters()) + list(self.projections.parameters()) if p.requires_grad]
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr
        )

    def autocast(self):
        """bf16 autocast where enabled, else nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def teacher_words(self, batch) -> Tuple[List["torch.Tensor"], "torch.Tensor"]:
        """The teacher's pooled word vectors at each matched depth, and each word's piece count."""
        with torch.no_grad(), self.autocast():
            out = self.teacher(
                input_ids=batch["t_ids"],
                attention_mask=batch["t_mask"],
                token_type_ids=batch["t_types"],
                output_hidden_states=True,
            )
        pooled = [pool_words(out.hidden_states[t], batch["t_words"], batch["n_words"]) for _, t in self.pairs]
        return [p for p, _ in pooled], pooled[0][1]

    def calibrate(self, batches: List[dict]) -> None:
        """Per-dimension mean and std of the teacher's word vectors at each matched depth."""
        if self.teacher is None:
            return
        vectors = [self.teacher_words(b) for b in batches]
        for k in range(len(self.pairs)):
            stacked = torch.cat([words[k][counts > 0] for words, counts in vectors])
            self.teacher_mean[k] = stacked.mean(0)
            self.teacher_std[k] = stacked.std(0).clamp(min=1e-4)

    def losses(self, batch, mlm_weight: float, generator) -> Tuple["torch.Tensor", Dict[str, Tuple[float, float]]]:
        """The weighted loss of a batch and the logged (value, count) of each part."""
        s = self.settings
        logged: Dict[str, Tuple[float, float]] = {}
        teacher_vectors = self.teacher_words(batch) if self.teacher is not None else None
        masked, at, targets = mask_words(
            batch,
            batch["n_words"],
            s.mlm_probability,
            self.tokenizer.mask_token_id,
            self.student.config.vocab_size,
            generator,
        )
        with self.autocast():
            out = self.student.albert(
                input_ids=masked,
                attention_mask=batch["s_mask"],
                token_type_ids=batch["s_types"],
                output_hidden_states=True,
            )
            picked = pad_rows(out.last_hidden_state[at])
            mlm_logits = self.student.predictions(picked)[: targets.shape[0]].float()
            sop_logits = self.student.sop_classifier(out.pooler_output).float()
        mlm = F.cross_entropy(mlm_logits, targets)
        sop = F.cross_entropy(sop_logits, batch["sop"])
        total = mlm_weight * mlm + s.sop_weight * sop
        logged["mlm"] = (mlm.item(), 1)
        logged["mlm_acc"] = ((mlm_logits.argmax(-1) == targets).float().mean().item(), targets.shape[0])
        logged["sop"] = (sop.item(), 1)
        logged["sop_acc"] = ((sop_logits.argmax(-1) == batch["sop"]).float().mean().item(), len(batch["sop"]))
        if teacher_vectors is not None:
            t_words, t_counts = teacher_vectors
            distill = 0.0
            for k, (s_layer, _) in enumerate(self.pairs):
                s_words, s_counts = pool_words(out.hidden_states[s_layer], batch["s_words"], batch["n_words"])
                valid = (s_counts > 0) & (t_counts > 0)
                target = (t_words[k][valid] - self.teacher_mean[k]) / self.teacher_std[k]
                with self.autocast():
                    predicted = self.projections[k](pad_rows(s_words[valid]))[: target.shape[0]].float()
                distill = distill + F.mse_loss(predicted, target)
            distill = distill / len(self.pairs)
            total = total + distill
            logged["distill"] = (distill.item(), 1)
        return total, logged

    def evaluate(self, batches: List[dict], seed: int) -> Dict[str, float]:
        """Held-out MLM and SOP accuracy (fixed masks) and distillation loss."""
        generator = torch.Generator().manual_seed(seed)
        losses = Losses()
        self.student.eval()
        with torch.no_grad():
            for batch in batches:
                _, logged = self.losses(batch, 1.0, generator)
                for name, (value, count) in logged.items():
                    losses.add(name, value, count)
        self.student.train()
        return losses.means()


# ---------------------------------------------------------------------------------------------
# Loading the models (all checked before any long work)


def load_student(settings: PretrainSettings):
    """(AlbertForPreTraining, AlbertTokenizer): a new one from --spm and --shape, or --init's."""
    from transformers import AlbertConfig, AlbertForPreTraining, AlbertTokenizer

    if settings.init:
        try:
            tokenizer = AlbertTokenizer.from_pretrained(settings.init)
            model = AlbertForPreTraining.from_pretrained(settings.init)
        except Exception as err:  # OSError offline / missing files, ValueError for other model types
            raise PretrainError(
                f"Cannot load an ALBERT to continue from {settings.init!r}: {err}\n"
                "Pass a folder with config.json, weights and spiece.model (a hub name needs the network)."
            ) from None
        if model.config.model_type != "albert":
            raise PretrainError(f"{settings.init} is a {model.config.model_type} model, not ALBERT.")
        return model, tokenizer
    if not settings.spm:
        raise PretrainError(
            "Pass --spm (ALBERT's SentencePiece model) for a new student, or --init to continue from an ALBERT."
        )
    check_spm(Path(settings.spm))
    if settings.shape not in SHAPES:
        raise PretrainError(f"Unknown shape {settings.shape!r}; choose one of {', '.join(SHAPES)}")
    tokenizer = AlbertTokenizer(vocab_file=settings.spm, do_lower_case=True, keep_accents=False)
    # ALBERT v2's settings: no dropout, gelu_new
    config = AlbertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        hidden_act="gelu_new",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **SHAPES[settings.shape],
    )
    return AlbertForPreTraining(config), tokenizer


def check_spm(path: Path) -> None:
    try:
        check_sentencepiece(path)
    except EncoderError as err:
        raise PretrainError(str(err)) from None


def load_teacher(path: Optional[str]):
    """(BertModel-like teacher, its fast tokenizer), or (None, None) without distillation."""
    if path is None:
        return None, None
    from transformers import AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=True)
    except Exception as err:  # transformers raises OSError/ValueError for unreadable folders
        raise PretrainError(
            f"Cannot load the teacher from {path}: {err}\n"
            "Pass --teacher DIR with a BERT-style model and tokenizer, or --teacher none."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise PretrainError(f"The teacher's tokenizer in {path} has no fast version: word alignment needs one.")
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# Device and precision


def pick_device(gpu_id: int):
    if gpu_id >= 0:
        if not torch.cuda.is_available():
            raise PretrainError(f"--gpu-id {gpu_id} asked for a GPU but torch sees none. Use --gpu-id -1 for the CPU.")
        return torch.device("cuda", gpu_id)
    return torch.device("cpu")


def autocast_dtype(precision: str, device):
    """bf16 where the hardware has it (CPU: AVX512-BF16 or AMX), else None (fp32)."""
    if precision == "fp32":
        return None
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_bf16_supported()
    if precision == "bf16" and not supported:
        raise PretrainError(
            "--precision bf16 asked for, but this hardware has no bf16 support. Use --precision auto or fp32."
        )
    return torch.bfloat16 if supported else None


def init_embeddings_from_teacher(student, student_tokenizer, teacher, teacher_tokenizer) -> int:
    """Start the student's factorized embeddings from the teacher's: returns the pieces mapped.

    Each SentencePiece piece takes the mean of the teacher's embeddings of its WordPiece
    tokenization (`▁word` as a word, a word-internal piece as `##piece`); a PCA of the teacher's
    embedding space gives the student's embedding size, and the embedding-to-hidden projection
    starts as its inverse, so the first layer sees roughly the teacher's embeddings.
    """

    t_emb = teacher.get_input_embeddings().weight.detach().float()
    size = student.config.embedding_size
    if student.config.hidden_size != t_emb.shape[1] or size > t_emb.shape[1]:
        return 0  # shapes that a PCA cannot bridge: keep the random start
    t_vocab = teacher_tokenizer.get_vocab()
    rows, mapped = [], []
    for piece_id in range(student.config.vocab_size):
        piece = student_tokenizer.convert_ids_to_tokens(piece_id)
        if piece in student_tokenizer.all_special_tokens:
            continue
        if piece.startswith("▁"):
            ids = teacher_tokenizer.encode(piece[1:], add_special_tokens=False) if len(piece) > 1 else []
        else:
            ids = (
                [t_vocab[f"##{piece}"]]
                if f"##{piece}" in t_vocab
                else teacher_tokenizer.encode(piece, add_special_tokens=False)
            )
        ids = [i for i in ids if i != teacher_tokenizer.unk_token_id]
        if ids:
            rows.append(t_emb[ids].mean(0))
            mapped.append(piece_id)
    if not mapped:
        return 0
    mean = t_emb.mean(0)
    _, _, v = torch.linalg.svd(t_emb - mean, full_matrices=False)
    basis = v[:size].T  # (teacher hidden, student embedding size)
    emb = student.albert.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight[mapped] = (torch.stack(rows) - mean) @ basis
        t_pos = getattr(getattr(teacher, "embeddings", None), "position_embeddings", None)
        if t_pos is not None and t_pos.weight.shape[0] >= emb.position_embeddings.weight.shape[0]:
            emb.position_embeddings.weight.copy_(
                t_pos.weight[: emb.position_embeddings.weight.shape[0]].float() @ basis
            )
        mapping = student.albert.encoder.embedding_hidden_mapping_in
        mapping.weight.copy_(basis)
        mapping.bias.copy_(mean)
    return len(mapped)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
