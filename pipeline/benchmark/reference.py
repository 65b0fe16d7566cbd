"""The reference the SRL pipelines are timed against: a spaCy pipeline of en_core_web_trf's
architecture (roberta-base + tagger, parser, ner, configs/trf_reference_roberta.cfg) with random
weights, since speed does not depend on them."""

from pathlib import Path
from typing import List

import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Config

from albert_srl.pipeline.benchmark.pipelines import check_precision, precision_overrides

# The project's configs/ folder, beside the package's folder in the checkout (an editable install).
REFERENCE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "trf_reference_roberta.cfg"
DEP_LABELS = (
    "ROOT acl acomp advcl advmod agent amod appos attr aux auxpass case cc ccomp compound conj csubj dative dep det "
    "dobj expl intj mark meta neg nmod npadvmod nsubj nsubjpass nummod oprd parataxis pcomp pobj poss preconj predet "
    "prep prt punct quantmod relcl xcomp"
).split()
ENT_LABELS = (
    "CARDINAL DATE EVENT FAC GPE LANGUAGE LAW LOC MONEY NORP ORDINAL ORG PERCENT PERSON PRODUCT QUANTITY TIME "
    "WORK_OF_ART"
).split()


def build_roberta_reference(folder: Path, texts: List[str]) -> Path:
    """A random roberta-base (12 x 768, 50,265 pieces) with a byte-level BPE of 8,000 pieces trained
    on `texts` (speed does not depend on the weights; a smaller BPE makes a few more pieces per word,
    which if anything slows this reference down a little)."""
    # Imported here, not at the top: every child process of the benchmark imports this package and
    # only the reference's use the roberta classes (the others' peak RSS should not include them).
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False
    )
    bpe.save_model(str(folder))
    RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt")).save_pretrained(
        folder
    )
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=50265)).save_pretrained(folder)
    return folder


def reference_pipeline(refs: List[Doc], folder: Path, precision: str = "fp32", on_gpu: bool = False) -> Language:
    """The en_core_web_trf-shaped pipeline (roberta-base + tagger, parser, ner, random weights) in
    FOLDER, its labels set up from REFS, at PRECISION ("shipped": spacy-transformers' own
    TransformerModel.v3, fp32, as en_core_web_trf runs it), warmed up."""
    texts = [doc.text for doc in refs]
    build_roberta_reference(folder, texts)
    config = Config().from_disk(REFERENCE_CONFIG)
    config["components"]["transformer"]["model"]["name"] = str(folder)
    if precision != "shipped":
        check_precision(precision, on_gpu)
        for key, value in precision_overrides(precision, on_gpu).items():
            config["components"]["transformer"]["model"][key.rsplit(".", 1)[1]] = value
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    for label in DEP_LABELS:
        nlp.get_pipe("parser").add_label(label)
    for label in ENT_LABELS:
        nlp.get_pipe("ner").add_label(label)
    tags = sorted({t.tag_ for doc in refs for t in doc if t.tag_})
    for tag in tags:
        nlp.get_pipe("tagger").add_label(tag)
    sample = refs[0][:8].as_doc()
    examples = [
        Example.from_dict(
            nlp.make_doc(sample.text),
            {
                "words": [t.text for t in sample],
                "tags": [t.tag_ or (tags[0] if tags else "X") for t in sample],
                "heads": [0] * len(sample),
                "deps": ["ROOT"] + ["dep"] * (len(sample) - 1),
            },
        )
    ]
    nlp.initialize(lambda: examples)
    list(nlp.pipe(texts[:8]))  # warm up
    return nlp
