"""Bracketed PropBank argument columns (`(ARG0*`, `*`, `*)`, `(V*)`), shared by every reader."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

from albert_srl.components.frames import FrameSpec

CELL = re.compile(r"^(?:\((?P<open>[^()*\s]+))?\*(?P<close_label>[^()*\s]*)(?P<close>\)?)$")
PTB_ESCAPES = {
    "-LRB-": "(",
    "-RRB-": ")",
    "-LCB-": "{",
    "-RCB-": "}",
    "-LSB-": "[",
    "-RSB-": "]",
    "/.": ".",
    "/?": "?",
    "/-": "-",
}


class CorpusFormatError(ValueError):
    """A problem in a corpus file, located by file and line."""

    def __init__(self, path: Union[str, Path], line: int, message: str):
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{path}:{line}: {message}")


@dataclass
class Sentence:
    """A converted sentence: the words and the frames, in sentence token offsets."""

    words: List[str]
    spaces: List[bool]
    tags: List[str]
    lemmas: List[str]
    frames: List[FrameSpec]
    source: str = ""
    # UD syntax where the corpus has it (EWT): UPOS, features, head index in the sentence (the
    # root points to itself, relation ROOT) and relation per word; None when it has none
    syntax: Optional["Syntax"] = None


@dataclass
class Syntax:
    pos: List[str]
    morphs: List[str]
    heads: List[int]
    deps: List[str]


@dataclass
class Skip:
    """A sentence (or document) left out of the corpus, and why."""

    path: str
    line: int
    reason: str
    predicates: int = 0
    arguments: int = 0

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "line": self.line,
            "reason": self.reason,
            "predicates": self.predicates,
            "arguments": self.arguments,
        }


@dataclass
class Bracket:
    label: str
    start: int
    end: int  # exclusive


def parse_column(cells: Sequence[str], lines: Sequence[int], path, column: int) -> List[Bracket]:
    """Parse one predicate's column of a sentence into labelled spans (token offsets)."""
    spans: List[Bracket] = []
    open_label, open_start = None, -1
    for i, cell in enumerate(cells):
        match = CELL.match(cell)
        if match is None:
            raise CorpusFormatError(
                path,
                lines[i],
                f"argument column {column}: cannot read cell {cell!r} "
                "(expected forms like '(ARG0*', '*', '*)', '(V*)')",
            )
        if match["open"]:
            if open_label is not None:
                raise CorpusFormatError(
                    path,
                    lines[i],
                    f"argument column {column}: '{match['open']}' opens while '{open_label}' "
                    f"(line {lines[open_start]}) is still open",
                )
            open_label, open_start = match["open"], i
        if match["close"]:
            if open_label is None:
                raise CorpusFormatError(
                    path,
                    lines[i],
                    f"argument column {column}: a bracket closes that was never opened (or closes twice)",
                )
            if match["close_label"] and match["close_label"] != open_label:
                raise CorpusFormatError(
                    path, lines[i], f"argument column {column}: '{match['close_label']})' closes '{open_label}'"
                )
            spans.append(Bracket(open_label, open_start, i + 1))
            open_label = None
    if open_label is not None:
        raise CorpusFormatError(
            path,
            lines[open_start],
            f"argument column {column}: '({open_label}' never closes before the sentence ends (line {lines[-1]})",
        )
    return spans


def split_predicate(spans: List[Bracket], path, line: int, column: int) -> Tuple[Bracket, List[Bracket]]:
    """Separate a column's `V` span from its arguments; exactly one `V` is required."""
    verbs = [s for s in spans if s.label == "V"]
    if len(verbs) != 1:
        raise CorpusFormatError(
            path,
            line,
            f"argument column {column} has {len(verbs)} '(V*' spans; each predicate column needs exactly one",
        )
    return verbs[0], [s for s in spans if s.label != "V"]


def frame_from_column(
    cells: Sequence[str],
    lines: Sequence[int],
    path,
    column: int,
    head: int,
    sense: str,
    predicate_type: str,
    role_map: Optional[Callable[[str], str]] = None,
) -> FrameSpec:
    """Read one predicate column into a FrameSpec; `head` is the token that carries the roleset."""
    spans = parse_column(cells, lines, path, column)
    if role_map is not None:
        spans = [Bracket(role_map(s.label), s.start, s.end) for s in spans]
    verb, arguments = split_predicate(spans, path, lines[head], column)
    # A predicate split by a hyphen (`jump - start`) may carry its roleset on the C-V piece.
    pieces = [verb] + [a for a in arguments if a.label == "C-V"]
    if not any(p.start <= head < p.end for p in pieces):
        raise CorpusFormatError(
            path,
            lines[head],
            f"predicate column {column}: neither its (V*) nor a (C-V*) span covers the roleset's token "
            f"(line {lines[head]})",
        )
    return FrameSpec(
        head=head,
        sense=sense,
        predicate=(verb.start, verb.end),
        predicate_type=predicate_type,
        arguments=[(a.label, a.start, a.end) for a in arguments],
    )


def unescape_ptb(word: str) -> str:
    """Undo Penn Treebank escapes such as `-LRB-` so that the Doc holds the real characters."""
    return PTB_ESCAPES.get(word, word)


CONLL05_ROLE = re.compile(r"^(?P<prefix>(?:[CR]-)?)A(?P<rest>[0-9A]|M-.+|M)$")


def normalize_role(role: str) -> str:
    """CoNLL-2005 role names (A0, AM-TMP, C-A1, R-AM-LOC) to PropBank style (ARG0, ARGM-TMP, ...)."""
    match = CONLL05_ROLE.match(role)
    if match is None:
        return role
    return f"{match['prefix']}ARG{match['rest']}"
