"""Column formats of the LDC-licensed SRL releases: CoNLL-2005 (words + props) and CoNLL-2012 (`*_conll`).

CoNLL-2005: one token per line, blank lines between sentences, columns
`WORD [other columns ...] TARGET PROP_1 ... PROP_n`, where TARGET is `-` or the predicate's lemma
(or roleset) and there is one bracket column per predicate. Roles are renamed to PropBank style
(`A0` -> `ARG0`, `AM-TMP` -> `ARGM-TMP`). The format has no document boundaries, so consecutive
sentences are grouped into Docs.

CoNLL-2012: `#begin document (ID); part NNN` ... `#end document`, columns doc id, part, word no,
word, POS, parse bit, predicate lemma, frameset id, word sense, speaker, named entities, one bracket
column per predicate, coreference.
"""

import re
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from albert_srl.components.frames import predicate_type_from_tag

from .props import CELL, CorpusFormatError, Sentence, Skip, frame_from_column, normalize_role, unescape_ptb

CONLL12_FIXED = 11  # columns before the predicate columns
BEGIN_DOCUMENT = re.compile(r"^#begin document \((?P<doc>[^)]*)\);?\s*(?:part\s+(?P<part>\d+))?")


def _blocks(path: Path) -> Iterator[Tuple[str, List[int], List[List[str]]]]:
    """Yield (kind, line numbers, rows) for sentences ("sentence") and `#` lines ("comment")."""
    rows, lines = [], []
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            if line.startswith("#"):
                if rows:
                    yield "sentence", lines, rows
                    rows, lines = [], []
                yield "comment", [line_no], [[line.rstrip("\n")]]
                continue
            cells = line.split()
            if not cells:
                if rows:
                    yield "sentence", lines, rows
                    rows, lines = [], []
                continue
            rows.append(cells)
            lines.append(line_no)
    if rows:
        yield "sentence", lines, rows


def _check_width(path, lines: Sequence[int], rows: Sequence[Sequence[str]], minimum: int) -> int:
    width = len(rows[0])
    for line, row in zip(lines, rows):
        if len(row) != width or len(row) < minimum:
            raise CorpusFormatError(
                path,
                line,
                f"malformed line: {len(row)} columns where the sentence's first line has {width} "
                f"(at least {minimum} needed)",
            )
    return width


def parse_conll12_sentence(path, lines: Sequence[int], rows: Sequence[Sequence[str]]) -> Sentence:
    width = _check_width(path, lines, rows, CONLL12_FIXED + 1)
    n_columns = width - CONLL12_FIXED - 1
    heads = [i for i, row in enumerate(rows) if row[7] != "-"]
    if len(heads) != n_columns:
        raise CorpusFormatError(
            path,
            lines[0],
            f"the sentence has {len(heads)} predicates (frameset column) but {n_columns} predicate columns",
        )
    tags = [row[4] for row in rows]
    frames = []
    for column, head in enumerate(heads):
        lemma, frameset = rows[head][6], rows[head][7]
        sense = frameset if "." in frameset else f"{lemma}.{frameset}"
        cells = [row[CONLL12_FIXED + column] for row in rows]
        frames.append(
            frame_from_column(cells, lines, path, column + 1, head, sense, predicate_type_from_tag(tags[head]))
        )
    words = [unescape_ptb(row[3]) for row in rows]
    return Sentence(words, [True] * len(words), tags, list(words), frames, f"{path}:{lines[0]}")


def read_conll12(path: Path) -> Tuple[List[Tuple[str, List[Sentence]]], List[Skip]]:
    """Documents (id, sentences) of a CoNLL-2012 file; bad sentences are skipped and returned."""
    documents: List[Tuple[str, List[Sentence]]] = []
    skips: List[Skip] = []
    current: Optional[List[Sentence]] = None
    for kind, lines, rows in _blocks(path):
        if kind == "comment":
            match = BEGIN_DOCUMENT.match(rows[0][0])
            if match:
                part = match["part"] or "000"
                current = []
                documents.append((f"{match['doc']}_{part}", current))
            elif rows[0][0].startswith("#end document"):
                current = None
            continue
        if current is None:  # sentences outside #begin/#end still count, as a document of their own
            current = []
            documents.append((f"{Path(path).name}:{lines[0]}", current))
        try:
            current.append(parse_conll12_sentence(path, lines, rows))
        except CorpusFormatError as err:
            skips.append(Skip(err.path, err.line, err.reason, sum(r[7] != "-" for r in rows if len(r) > 7)))
    return documents, skips


def _target_column(path, lines: Sequence[int], rows: Sequence[Sequence[str]], width: int) -> int:
    """Find TARGET: the column after which every column is a bracket column, one per target."""
    k = width - 1
    while k > 0 and all(CELL.match(row[k]) for row in rows):
        k -= 1
    n_targets = sum(row[k] != "-" for row in rows)
    if k < 1 or n_targets != width - 1 - k:
        raise CorpusFormatError(
            path,
            lines[0],
            f"cannot find the predicate columns: the target column {k + 1} names {n_targets} predicates "
            f"but {width - 1 - k} bracket columns follow it",
        )
    return k


def parse_conll05_sentence(
    path, lines: Sequence[int], rows: Sequence[Sequence[str]], pos_column: Optional[int]
) -> Sentence:
    width = _check_width(path, lines, rows, 2)
    target = _target_column(path, lines, rows, width)
    if pos_column is not None and not 0 < pos_column < target:
        raise CorpusFormatError(
            path, lines[0], f"--pos-column {pos_column} is not a column between the word and the target column {target}"
        )
    tags = [row[pos_column] for row in rows] if pos_column is not None else ["" for _ in rows]
    heads = [i for i, row in enumerate(rows) if row[target] != "-"]
    frames = [
        frame_from_column(
            [row[target + 1 + column] for row in rows],
            lines,
            path,
            column + 1,
            head,
            sense=rows[head][target],
            predicate_type=predicate_type_from_tag(tags[head]) if pos_column is not None else "verbal",
            role_map=normalize_role,
        )
        for column, head in enumerate(heads)
    ]
    words = [unescape_ptb(row[0]) for row in rows]
    return Sentence(words, [True] * len(words), tags, list(words), frames, f"{path}:{lines[0]}")


def read_conll05(
    path: Path, sentences_per_doc: int = 10, pos_column: Optional[int] = None
) -> Tuple[List[Tuple[str, List[Sentence]]], List[Skip]]:
    """Documents of `sentences_per_doc` consecutive sentences of a CoNLL-2005 file, and the skips."""
    sentences: List[Sentence] = []
    skips: List[Skip] = []
    for kind, lines, rows in _blocks(path):
        if kind != "sentence":
            continue
        try:
            sentences.append(parse_conll05_sentence(path, lines, rows, pos_column))
        except CorpusFormatError as err:
            skips.append(Skip(err.path, err.line, err.reason))
    name = Path(path).name
    documents = [
        (f"{name}#{i // sentences_per_doc}", sentences[i : i + sentences_per_doc])
        for i in range(0, len(sentences), sentences_per_doc)
    ]
    return documents, skips
