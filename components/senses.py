"""Rolesets for word forms the training data never showed as predicates.

The srl pipe picks a predicate's roleset among those seen with its word form. For an unseen form
(`reopened`, `tweets`) it looks the form's likely lemmas up among the rolesets' own lemmas
(`reopen.01`, `tweet.01`), since a roleset is named after its lemma."""

import re
from collections import Counter, defaultdict
from typing import Dict, List, Sequence

DOUBLED = re.compile(r"([bdfgklmnprtvz])\1$")


def lemma_candidates(form: str) -> List[str]:
    """Lemmas an English word form may have, most likely first: the form itself, then the form
    without a plural, 3rd-person, past, participle or comparative ending."""
    candidates = [form]

    def add(stem: str) -> None:
        if len(stem) >= 2 and stem not in candidates:
            candidates.append(stem)

    for suffix, replacements in (
        ("ies", ("y",)),
        ("ied", ("y",)),
        ("ier", ("y",)),
        ("iest", ("y",)),
        ("ing", ("", "e")),
        ("ed", ("", "e")),
        ("es", ("",)),
        ("er", ("", "e")),
        ("est", ("", "e")),
        ("s", ("",)),
        ("d", ("",)),
    ):
        if form.endswith(suffix) and len(form) > len(suffix) + 1:
            stem = form[: -len(suffix)]
            if DOUBLED.search(stem) and suffix in ("ing", "ed", "er", "est"):
                add(stem[:-1])  # stopped -> stop, bigger -> big
            for replacement in replacements:
                add(stem + replacement)
    return candidates


def senses_by_lemma(lexicon: Dict[str, Sequence[str]]) -> Dict[str, List[str]]:
    """Rolesets grouped by their lemma (`give.01` -> `give`), those listed for more word forms first."""
    counts: Dict[str, Counter] = defaultdict(Counter)
    for senses in lexicon.values():
        for sense in senses:
            counts[sense.rsplit(".", 1)[0]][sense] += 1
    return {lemma: [sense for sense, _ in c.most_common()] for lemma, c in counts.items()}


def unseen_form_senses(form: str, by_lemma: Dict[str, List[str]]) -> List[str]:
    """The rolesets of the first of the form's likely lemmas that names any; none if no lemma does."""
    for lemma in lemma_candidates(form):
        if lemma in by_lemma:
            return by_lemma[lemma]
    return []
