"""Rolesets for word forms unseen as predicates in training: looked up by their likely lemma."""

import pytest

from albert_srl.components.senses import lemma_candidates, senses_by_lemma, unseen_form_senses


@pytest.mark.parametrize(
    "form,lemma",
    [
        ("reopened", "reopen"),
        ("tweets", "tweet"),
        ("stopped", "stop"),
        ("bigger", "big"),
        ("studies", "study"),
        ("making", "make"),
        ("used", "use"),
        ("happier", "happy"),
        ("decisions", "decision"),
        ("give", "give"),
    ],
)
def test_lemma_candidates_include_the_lemma(form, lemma):
    candidates = lemma_candidates(form)
    assert candidates[0] == form and lemma in candidates


def test_unseen_forms_get_the_rolesets_of_their_lemma():
    lexicon = {"gave": ["give.01"], "gives": ["give.01", "give.02"], "given": ["give.01"], "ran": ["run.02"]}
    by_lemma = senses_by_lemma(lexicon)
    assert by_lemma["give"] == ["give.01", "give.02"]  # listed for more forms first
    assert unseen_form_senses("giving", by_lemma) == ["give.01", "give.02"]
    assert unseen_form_senses("runs", by_lemma) == ["run.02"]
    assert unseen_form_senses("xyzzy", by_lemma) == []
