"""The texts of an encoder build: reading text sources, chunking documents, batching chunks.

Texts are text files or folders (WikiExtractor `<doc>` blocks are documents), Parquet stores (a
text column) and .spacy corpora. A chunk is two consecutive segments of a document, tokenized by
the student and by the teacher, with both sides' sub-word pieces mapped to the same words.
"""

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from wasabi import msg

from albert_srl.pipeline.pretrain_settings import PretrainError

# Words as the BERT basic tokenizer sees them: runs of word characters, or one punctuation mark.
WORD_RE = re.compile(r"\w+|[^\w\s]")
# A sentence ends at . ! or ? followed by space and something that can start a sentence.
SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'“‘(\[]?[A-Z0-9])")
WIKI_DOC_RE = re.compile(r"<doc [^>]*>\n(.*?)</doc>", re.S)
PAD_MULTIPLE = 16  # sequence lengths are padded to buckets: few shapes keep CPU bf16 memory flat
# in text folders these describe the texts: not trained on
NOTES_FILES = ("README", "SOURCES", "LICENSE", "LICENCE")


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


def split_held_out(documents: List[str]) -> Tuple[List[str], List[str]]:
    """(training, held-out) documents: every 100th is held out (the last one, when there are fewer)."""
    held_ids = {i for i in range(len(documents)) if i % 100 == 99} or {len(documents) - 1}
    held_out = [documents[i] for i in sorted(held_ids)]
    training = [d for i, d in enumerate(documents) if i not in held_ids]
    if not training:
        msg.warn(
            "Only one document: it is trained on and held out at once, so the held-out scores are training scores."
        )
        training = documents
    return training, held_out


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
                "The training texts make no chunk of two segments "
                "(documents of one word, or every chunk longer than --max-pieces)."
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


def held_out_chunks(documents: List[str], encoder: ChunkEncoder, limit: int) -> List[Chunk]:
    """The first `limit` chunks of the held-out documents, the same ones in every run."""
    chunks = [
        c
        for _, c in zip(
            range(limit),
            (c for i, d in enumerate(documents) for c in encoder.chunks(d, random.Random(f"eval-{i}"))),
        )
    ]
    if not chunks:
        raise PretrainError(
            "The held-out texts make no chunk of two segments: the texts are too short, "
            "or every chunk has more pieces than --max-pieces."
        )
    return chunks


def collate_all(chunks: List[Chunk], batch_size: int, pad_id: int, teacher_pad_id: int, device) -> List[dict]:
    """All the chunks as padded batches, in order."""
    return [
        collate(chunks[i : i + batch_size], pad_id, teacher_pad_id, device) for i in range(0, len(chunks), batch_size)
    ]
