"""Corpus readers: EWT PropBank (gold_skel + UD), CoNLL-2005 and CoNLL-2012 columns."""
