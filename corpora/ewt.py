"""EWT PropBank: fill the `[WORD]` blanks of `.gold_skel` files with the words of UD English EWT.

One PropBank token is one UD syntactic word, except in a handful of places: a multiword token
kept whole (`Im`), two UD words that PropBank joins (`at`+`least`), or one UD word that PropBank
splits (`where-ever`, `$$`, `@Ryan`). Tokens are aligned per sentence by a small
dynamic programme over those operations, scored by POS agreement (PropBank POS vs UD XPOS).
Sentences are paired by position, or by length where the two files disagree on their number.
"""

import re
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from albert_srl.components.frames import FrameSpec, predicate_type_from_tag

from .props import CorpusFormatError, Sentence, Skip, Syntax, frame_from_column

SKEL_MIN_COLUMNS = 8  # doc, sentence no, token no, [WORD], POS, parse bit, lemma, roleset
MAX_POS_RUN = 4  # a run of this many 1:1 tag disagreements means the tokens are shifted
ATOM = re.compile(r"'\w+|\w+|[^\w\s]")
# Universal POS tags (UD v2); anything else becomes X
UPOS = frozenset("ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split())


# ---------------------------------------------------------------------------------------------
# .gold_skel


@dataclass
class SkelSentence:
    path: str
    lines: List[int]
    rows: List[List[str]]

    @property
    def n_predicates(self) -> int:
        """Rolesets or predicate columns, whichever is more: what is lost when the sentence is skipped."""
        rolesets = sum(1 for row in self.rows if len(row) > 7 and row[7] != "-")
        return max(rolesets, max(len(row) for row in self.rows) - SKEL_MIN_COLUMNS)

    @property
    def n_arguments(self) -> int:
        """Argument brackets besides V: what is lost when the sentence is skipped."""
        return sum(
            1
            for row in self.rows
            for cell in row[SKEL_MIN_COLUMNS:]
            if cell.startswith("(") and not cell.startswith("(V*")
        )


def read_gold_skel(path: Path) -> List[SkelSentence]:
    """Split a `.gold_skel` file into sentences of whitespace-split rows (columns are space-aligned)."""
    sentences, rows, lines = [], [], []
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            cells = line.split()
            if not cells:
                if rows:
                    sentences.append(SkelSentence(str(path), lines, rows))
                    rows, lines = [], []
                continue
            rows.append(cells)  # checked per sentence, so one bad line costs one sentence
            lines.append(line_no)
    if rows:  # the last sentence is closed by the end of the file
        sentences.append(SkelSentence(str(path), lines, rows))
    return sentences


def parse_skel_sentence(sent: SkelSentence) -> Tuple[List[str], List[FrameSpec]]:
    """POS tags and frames of one `.gold_skel` sentence; raises CorpusFormatError on bad input."""
    path, lines, rows = sent.path, sent.lines, sent.rows
    for i, row in enumerate(rows):
        if len(row) < SKEL_MIN_COLUMNS:
            raise CorpusFormatError(
                path,
                lines[i],
                f"malformed line: {len(row)} columns, a .gold_skel row has at least {SKEL_MIN_COLUMNS} "
                "(doc, sentence, token, [WORD], POS, parse, lemma, roleset)",
            )
        if not (row[2].isdigit() and int(row[2]) == i):
            raise CorpusFormatError(path, lines[i], f"malformed line: token number {row[2]!r}, expected {i}")
        if row[1] != rows[0][1]:
            raise CorpusFormatError(
                path,
                lines[i],
                f"malformed line: sentence number {row[1]} inside sentence {rows[0][1]} (missing blank line?)",
            )
    predicate_rows = [i for i, row in enumerate(rows) if row[7] != "-"]
    n_columns = max(len(row) for row in rows) - SKEL_MIN_COLUMNS
    for i, row in enumerate(rows):
        if len(row) - SKEL_MIN_COLUMNS not in (n_columns, 0) or (n_columns and len(row) == SKEL_MIN_COLUMNS):
            raise CorpusFormatError(
                path,
                lines[i],
                f"malformed line: {len(row) - SKEL_MIN_COLUMNS} argument columns where the sentence has {n_columns}",
            )
    if n_columns != len(predicate_rows):
        raise CorpusFormatError(
            path, lines[0], f"the sentence has {len(predicate_rows)} rolesets but {n_columns} predicate columns"
        )
    tags = [row[4] for row in rows]
    frames = [
        frame_from_column(
            [row[SKEL_MIN_COLUMNS + column] for row in rows],
            lines,
            path,
            column + 1,
            head=head,
            sense=rows[head][7],
            predicate_type=predicate_type_from_tag(tags[head]),
        )
        for column, head in enumerate(predicate_rows)
    ]
    return tags, frames


# ---------------------------------------------------------------------------------------------
# UD CoNLL-U


@dataclass
class UDWord:
    form: str
    lemma: str
    xpos: str
    space_after: bool
    mwt: Optional[Tuple[int, int, str]] = None  # (first word, last word + 1, surface) of its multiword token
    upos: str = ""
    feats: str = ""  # UD morphological features, "" for none
    head: int = -1  # index of the head word in the sentence; -1 for the root
    deprel: str = ""


@dataclass
class UDSentence:
    line: int
    words: List[UDWord] = field(default_factory=list)


def read_conllu(path: Path) -> List[UDSentence]:
    """Read syntactic words (multiword-token ranges noted, empty nodes skipped) per sentence."""
    sentences: List[UDSentence] = []
    current: Optional[UDSentence] = None
    mwt_pending: Optional[Tuple[int, int, str, bool]] = None
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if current is not None and current.words:
                    sentences.append(current)
                current, mwt_pending = None, None
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise CorpusFormatError(
                    path, line_no, f"malformed CoNLL-U line: {len(cols)} tab-separated columns, expected 10"
                )
            if current is None:
                current = UDSentence(line_no)
            word_id, form, lemma, upos, xpos, feats, head, deprel, _deps, misc = cols
            no_space = "SpaceAfter=No" in misc.split("|")
            if "." in word_id:  # empty node: not a surface word
                continue
            if "-" in word_id:
                first, last = (int(x) for x in word_id.split("-"))
                mwt_pending = (first, last, form, not no_space)
                continue
            if not head.isdigit():
                raise CorpusFormatError(path, line_no, f"head {head!r} is not a word number")
            idx = len(current.words)
            word = UDWord(
                form, lemma, xpos, not no_space, None, upos, "" if feats == "_" else feats, int(head) - 1, deprel
            )
            if mwt_pending is not None and mwt_pending[0] <= int(word_id) <= mwt_pending[1]:
                first, last, surface, space_after = mwt_pending
                start = idx - (int(word_id) - first)
                word.mwt = (start, start + last - first + 1, surface)
                word.space_after = space_after if int(word_id) == last else False
            current.words.append(word)
    if current is not None and current.words:
        sentences.append(current)
    return sentences


# ---------------------------------------------------------------------------------------------
# Token alignment


def _pos_group(tag: str) -> str:
    return "word" if any(c.isalpha() for c in tag) and tag not in ("HYPH", "NFP", "ADD") else "punct"


def split_form(form: str, tags: Sequence[str]) -> Optional[List[str]]:
    """Split one UD word into len(tags) pieces at character-class boundaries, guided by the tags."""
    atoms = ATOM.findall(form)
    if "".join(atoms) != form or len(atoms) < len(tags):
        return None
    best, best_cost = None, None
    for cuts in combinations(range(1, len(atoms)), len(tags) - 1):
        bounds = (0,) + cuts + (len(atoms),)
        pieces = ["".join(atoms[a:b]) for a, b in zip(bounds, bounds[1:])]
        cost = sum(
            _pos_group(tag) != ("word" if any(c.isalnum() for c in piece) else "punct")
            for piece, tag in zip(pieces, tags)
        )
        if best_cost is None or cost < best_cost:
            best, best_cost = pieces, cost
    return best


@dataclass
class AlignedToken:
    text: str
    space_after: bool
    lemma: str
    op: str  # "1:1", "merge" or "split"
    agrees: bool = True
    upos: str = ""
    morph: str = ""
    head: int = -1  # index of the head token in the sentence; -1 for the root
    dep: str = ""


def align_tokens(pb_tags: Sequence[str], words: Sequence[UDWord]) -> Optional[List[AlignedToken]]:
    """One surface token per PropBank token, or None when the tokens cannot be aligned."""
    n, m = len(pb_tags), len(words)
    INF = float("inf")
    cost = [[INF] * (m + 1) for _ in range(n + 1)]
    back: Dict[Tuple[int, int], Tuple[int, int, str]] = {}
    cost[0][0] = 0.0
    n_atoms = [len(ATOM.findall(w.form)) for w in words]
    for i in range(n + 1):
        for j in range(m + 1):
            c = cost[i][j]
            if c == INF:
                continue
            if i < n and j < m:  # one to one
                step = c + (0.0 if pb_tags[i] == words[j].xpos else 1.0)
                if step < cost[i + 1][j + 1]:
                    cost[i + 1][j + 1], back[i + 1, j + 1] = step, (i, j, "1:1")
            for k in (2, 3):  # k UD words make one PropBank token (no space inside)
                if i < n and j + k <= m and not any(w.space_after for w in words[j : j + k - 1]):
                    mwt = words[j].mwt
                    step = c + (1.0 if mwt is not None and mwt[:2] == (j, j + k) else 1.5)
                    if step < cost[i + 1][j + k]:
                        cost[i + 1][j + k], back[i + 1, j + k] = step, (i, j, "merge")
            for k in (2, 3, 4, 5):  # one UD word split into k PropBank tokens
                if (
                    j < m
                    and i + k <= n
                    and n_atoms[j] >= k
                    and split_form(words[j].form, pb_tags[i : i + k]) is not None
                ):
                    step = c + 1.5
                    if step < cost[i + k][j + 1]:
                        cost[i + k][j + 1], back[i + k, j + 1] = step, (i, j, "split")
    if cost[n][m] == INF:
        return None
    ops = []
    i, j = n, m
    while (i, j) != (0, 0):
        pi, pj, op = back[i, j]
        ops.append((pi, i, pj, j, op))
        i, j = pi, pj
    tokens: List[AlignedToken] = []
    groups = []  # (first token, number of tokens, UD words) per operation, for the syntax below
    for pi, pe, pj, pe_j, op in reversed(ops):
        span = words[pj:pe_j]
        first = len(tokens)
        if op == "1:1":
            w = span[0]
            tokens.append(AlignedToken(w.form, w.space_after, w.lemma, op, pb_tags[pi] == w.xpos))
        elif op == "merge":
            mwt = span[0].mwt
            text = mwt[2] if mwt is not None and mwt[:2] == (pj, pe_j) else "".join(w.form for w in span)
            tokens.append(AlignedToken(text, span[-1].space_after, text, op))
        else:
            pieces = split_form(span[0].form, pb_tags[pi:pe])
            for k, piece in enumerate(pieces):
                tokens.append(AlignedToken(piece, span[0].space_after if k == len(pieces) - 1 else False, piece, op))
        groups.append((first, len(tokens) - first, range(pj, pe_j)))
    add_syntax(tokens, groups, words)
    run = longest = 0
    for token in tokens:
        run = 0 if token.agrees else run + 1
        longest = max(longest, run)
    if longest >= MAX_POS_RUN:
        return None
    return tokens


def join_words(sentences: Sequence[UDSentence]) -> List[UDWord]:
    """The words of consecutive UD sentences as one sentence: heads shifted, and each later
    sentence's root attached to the first one's (`parataxis`), so the words still form one tree."""
    words: List[UDWord] = []
    first_root = None
    for sentence in sentences:
        offset = len(words)
        for i, word in enumerate(sentence.words):
            head = word.head + offset if word.head >= 0 else -1
            deprel = word.deprel
            if head < 0 and first_root is None:
                first_root = offset + i
            elif head < 0:
                head, deprel = first_root, "parataxis"
            mwt = (word.mwt[0] + offset, word.mwt[1] + offset, word.mwt[2]) if word.mwt else None
            words.append(replace(word, head=head, deprel=deprel, mwt=mwt))
    return words


def add_syntax(tokens: List[AlignedToken], groups: Sequence[Tuple[int, int, range]], words: Sequence[UDWord]) -> None:
    """Carry UD's UPOS, features, head and relation over to the aligned tokens (in place).

    Joined words take those of the word whose head lies outside them; a split word's first piece
    takes the word's, and its other pieces attach to the first (`goeswith`). Where the result is
    not one tree (no UD tree to begin with, or a join of words that are not connected), every
    token's head stays -1 and its relation "": the sentence has no syntax."""
    word_token = {j: first for first, _, span in groups for j in span}
    for first, count, span in groups:
        inside = set(span)
        word = words[next((j for j in span if words[j].head not in inside), span[0])]
        head = word_token[word.head] if word.head >= 0 else -1
        tokens[first].upos, tokens[first].morph, tokens[first].head, tokens[first].dep = (
            word.upos,
            word.feats,
            head,
            word.deprel,
        )
        for piece in tokens[first + 1 : first + count]:
            piece.upos, piece.morph, piece.head, piece.dep = word.upos, word.feats, first, "goeswith"
    if not is_tree([t.head for t in tokens]) or not all(t.dep for t in tokens):
        for token in tokens:
            token.head, token.dep = -1, ""


def token_syntax(tokens: Sequence[AlignedToken]) -> Optional[Syntax]:
    """The aligned tokens' syntax as a Sentence carries it, or None where they have none."""
    if not tokens or not tokens[0].dep:
        return None
    return Syntax(
        pos=[t.upos if t.upos in UPOS else "X" for t in tokens],
        morphs=[t.morph for t in tokens],
        heads=[i if t.head < 0 else t.head for i, t in enumerate(tokens)],
        deps=["ROOT" if t.head < 0 else t.dep for t in tokens],
    )


def is_tree(heads: Sequence[int]) -> bool:
    """Whether heads (-1 for the root) make one tree: a single root that every token reaches."""
    if sum(1 for h in heads if h < 0) != 1 or any(h == i for i, h in enumerate(heads)):
        return False
    for i in range(len(heads)):
        seen, node = 0, i
        while heads[node] >= 0:
            node, seen = heads[node], seen + 1
            if seen > len(heads):
                return False
    return True


def pair_sentences(skel: List[SkelSentence], ud: List[UDSentence]) -> List[Tuple[SkelSentence, Optional[List[UDWord]]]]:
    """Pair PropBank and UD sentences: by position, or by length where their numbers differ.

    A PropBank sentence may span two consecutive UD sentences; a sentence on either side may
    have no partner (PropBank ones are then reported as skipped).
    """
    if len(skel) == len(ud):
        return [(s, u.words) for s, u in zip(skel, ud)]
    n, m = len(skel), len(ud)
    INF = float("inf")
    cost = [[INF] * (m + 1) for _ in range(n + 1)]
    back = {}
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            c = cost[i][j]
            if c == INF:
                continue
            moves = []
            if i < n and j < m:
                moves.append((i + 1, j + 1, 2 * abs(len(skel[i].rows) - len(ud[j].words))))
            if i < n and j + 1 < m:
                moves.append((i + 1, j + 2, 2 * abs(len(skel[i].rows) - len(ud[j].words) - len(ud[j + 1].words)) + 1))
            if i < n:
                moves.append((i + 1, j, len(skel[i].rows) + 1))
            if j < m:
                moves.append((i, j + 1, len(ud[j].words) + 1))
            for ni, nj, step in moves:
                if c + step < cost[ni][nj]:
                    cost[ni][nj], back[ni, nj] = c + step, (i, j)
    pairs = []
    i, j = n, m
    while (i, j) != (0, 0):
        pi, pj = back[i, j]
        if i > pi:
            pairs.append((skel[pi], join_words(ud[pj:j]) if j > pj else None))
        i, j = pi, pj
    return list(reversed(pairs))


def convert_document(skel_path: Path, ud_path: Path) -> Tuple[List[Sentence], List[Skip]]:
    """Convert one `.gold_skel` file with its UD document; returns sentences and what was skipped."""
    skel = read_gold_skel(skel_path)
    ud = read_conllu(ud_path)
    sentences, skips = [], []
    for sent, words in pair_sentences(skel, ud):
        where = (str(skel_path), sent.lines[0])
        if words is None:
            skips.append(
                Skip(
                    *where, f"no UD sentence pairs with this one in {ud_path.name}", sent.n_predicates, sent.n_arguments
                )
            )
            continue
        try:
            tags, frames = parse_skel_sentence(sent)
        except CorpusFormatError as err:
            skips.append(Skip(err.path, err.line, err.reason, sent.n_predicates, sent.n_arguments))
            continue
        tokens = align_tokens(tags, words)
        if tokens is None:
            text = " ".join(w.form for w in words)
            skips.append(
                Skip(
                    *where,
                    f"tokens cannot be aligned ({len(tags)} PropBank tokens vs {len(words)} UD words: {text[:80]!r})",
                    sent.n_predicates,
                    sent.n_arguments,
                )
            )
            continue
        sentences.append(
            Sentence(
                words=[t.text for t in tokens],
                spaces=[t.space_after for t in tokens],
                tags=tags,
                lemmas=[t.lemma for t in tokens],
                frames=frames,
                source=f"{skel_path}:{sent.lines[0]}",
                syntax=token_syntax(tokens),
            )
        )
    return sentences, skips
