"""Convert SRL corpora to spaCy DocBin files (`.spacy`) with gold frames on each Doc.

python -m albert_srl.pipeline.convert ewt EWT_DIR corpus/ewt
python -m albert_srl.pipeline.convert conll12 INPUT OUTPUT.spacy
python -m albert_srl.pipeline.convert conll05 INPUT OUTPUT.spacy
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import spacy
import typer
from spacy.tokens import DocBin
from wasabi import msg

from albert_srl.corpora.conll import read_conll05, read_conll12
from albert_srl.corpora.docs import add_doc_counts, empty_counts, merge_counts, sentences_to_doc
from albert_srl.corpora.ewt import convert_document, read_gold_skel
from albert_srl.corpora.props import CorpusFormatError, Sentence, Skip

SPLITS = ("train", "dev", "test")
PROPBANK_SUBDIR = Path("propbank/data/google/ewt")
UD_SOURCES_SUBDIR = Path("ud/not-to-release/sources")
UD_SPLITS_SUBDIR = Path("ud/not-to-release/file-lists")

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


def read_split_lists(ewt_dir: Path) -> Dict[str, str]:
    """Map `genre/document` (no `.conllu`) to its UD split."""
    assignment = {}
    for split in SPLITS:
        path = ewt_dir / UD_SPLITS_SUBDIR / f"files.{split}"
        for line in path.read_text(encoding="utf8").split():
            assignment[line.removesuffix(".conllu")] = split
    return assignment


def check_ewt_dir(ewt_dir: Path) -> None:
    """Fail early, with what to do, when EWT_DIR is not the corpus folder."""
    needed = [ewt_dir / PROPBANK_SUBDIR, ewt_dir / UD_SOURCES_SUBDIR] + [
        ewt_dir / UD_SPLITS_SUBDIR / f"files.{s}" for s in SPLITS
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        msg.fail(
            f"{ewt_dir} is not an EWT PropBank folder; missing: {', '.join(missing)}",
            "Pass the folder that holds propbank/ (propbank-release) and ud/ (UD_English-EWT), "
            "e.g. ../shared/corpora/ewt-propbank, or fetch them with `spacy project assets`.",
            exits=1,
        )


def skel_loss(path: Path) -> Tuple[int, int]:
    """Predicates and arguments in a `.gold_skel` file: what a skipped document loses."""
    try:
        sentences = read_gold_skel(path)
    except (OSError, UnicodeDecodeError):
        return 0, 0
    return sum(s.n_predicates for s in sentences), sum(s.n_arguments for s in sentences)


def split_report(counts: dict, skips: List[Skip]) -> dict:
    lost = sum(s.predicates for s in skips)
    source = counts["predicates"] + lost
    return {
        **counts,
        "source_predicates": source,
        "predicate_recovery": round(counts["predicates"] / source, 6) if source else 1.0,
        "skipped_sentences": len(skips),
        "skipped": [s.to_dict() for s in skips],
    }


def print_report(report: dict, limit: int = 20) -> None:
    rows = []
    for split in (*SPLITS, "total"):
        r = report[split]
        by_type = r["predicates_by_type"]
        rows.append(
            (
                split,
                r["documents"],
                r["sentences"],
                r["tokens"],
                r["predicates"],
                by_type.get("verbal", 0),
                by_type.get("nominal", 0),
                by_type.get("adjectival", 0),
                r["arguments"],
                r["skipped_sentences"],
                f"{100 * r['predicate_recovery']:.2f}%",
            )
        )
        for genre, g in r.get("genres", {}).items():
            gt = g["predicates_by_type"]
            rows.append(
                (
                    f"  {genre}",
                    g["documents"],
                    g["sentences"],
                    g["tokens"],
                    g["predicates"],
                    gt.get("verbal", 0),
                    gt.get("nominal", 0),
                    gt.get("adjectival", 0),
                    g["arguments"],
                    "",
                    "",
                )
            )
    header = (
        "split / genre",
        "docs",
        "sents",
        "tokens",
        "preds",
        "verbal",
        "nominal",
        "adj",
        "args",
        "skipped",
        "recovered",
    )
    msg.table(rows, header=header, divider=True, aligns=("l",) + ("r",) * 10)
    skipped = [s for split in SPLITS for s in report[split]["skipped"]]
    if skipped:
        msg.warn(f"{len(skipped)} sentences or documents skipped (all listed in the report):")
        for s in skipped[:limit]:
            print(f"  {s['file']}:{s['line']}: {s['reason']} ({s['predicates']} predicates)")
        if len(skipped) > limit:
            print(f"  ... and {len(skipped) - limit} more")


@app.command("ewt")
def convert_ewt(
    ewt_dir: Path = typer.Argument(..., help="Folder with propbank/ (propbank-release) and ud/ (UD_English-EWT)"),
    output_dir: Path = typer.Argument(..., help="Where train.spacy, dev.spacy, test.spacy and report.json go"),
    min_recovery: float = typer.Option(
        0.999, help="Fail when fewer than this share of the source predicates are recovered"
    ),
    lang: str = typer.Option("en", help="spaCy language of the Docs"),
):
    """Fill the [WORD] blanks of EWT PropBank with UD English EWT and write the UD split."""
    check_ewt_dir(ewt_dir)
    split_of = read_split_lists(ewt_dir)
    vocab = spacy.blank(lang).vocab
    bins = {split: DocBin(store_user_data=True) for split in SPLITS}
    counts = {split: empty_counts() for split in SPLITS}
    genres: Dict[str, Dict[str, dict]] = {split: {} for split in SPLITS}
    skips: Dict[str, List[Skip]] = {split: [] for split in SPLITS}
    unassigned: List[str] = []
    skel_paths = sorted((ewt_dir / PROPBANK_SUBDIR).glob("*/00/*.gold_skel"))
    if not skel_paths:
        msg.fail(f"No .gold_skel files under {ewt_dir / PROPBANK_SUBDIR}/<genre>/00/", exits=1)
    msg.info(f"Converting {len(skel_paths)} documents from {ewt_dir}")
    for skel_path in skel_paths:
        genre, name = skel_path.parts[-3], skel_path.name.removesuffix(".gold_skel")
        split = split_of.get(f"{genre}/{name}")
        if split is None:
            unassigned.append(str(skel_path))
            continue
        ud_path = ewt_dir / UD_SOURCES_SUBDIR / genre / f"{name}.conllu"
        try:
            if not ud_path.exists():
                raise CorpusFormatError(
                    skel_path, 1, f"no UD document {ud_path} to fill the words in; the whole document is skipped"
                )
            sentences, doc_skips = convert_document(skel_path, ud_path)
        except (CorpusFormatError, OSError, UnicodeDecodeError) as err:
            reason = err.reason if isinstance(err, CorpusFormatError) else f"cannot read: {err}"
            line = err.line if isinstance(err, CorpusFormatError) else 0
            path = err.path if isinstance(err, CorpusFormatError) else str(skel_path)
            skips[split].append(Skip(path, line, reason, *skel_loss(skel_path)))
            continue
        skips[split].extend(doc_skips)
        if not sentences:
            continue
        doc = sentences_to_doc(vocab, sentences, doc_id=f"{genre}/{name}", genre=genre)
        bins[split].add(doc)
        add_doc_counts(counts[split], doc)
        add_doc_counts(genres[split].setdefault(genre, empty_counts()), doc)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    total = empty_counts()
    for split in SPLITS:
        bins[split].to_disk(output_dir / f"{split}.spacy")
        report[split] = split_report(counts[split], skips[split])
        report[split]["genres"] = dict(sorted(genres[split].items()))
        merge_counts(total, counts[split])
    report["total"] = split_report(total, [s for split in SPLITS for s in skips[split]])
    report["total"]["skipped"] = []  # listed per split
    report["total"]["not_in_any_split"] = unassigned
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf8")
    print_report(report)
    recovery = report["total"]["predicate_recovery"]
    if recovery < min_recovery:
        msg.fail(
            f"Only {100 * recovery:.2f}% of predicates recovered (need {100 * min_recovery:.2f}%); "
            f"see {output_dir / 'report.json'}",
            exits=1,
        )
    msg.good(
        f"Wrote {', '.join(str(output_dir / f'{s}.spacy') for s in SPLITS)} and {output_dir / 'report.json'} "
        f"({100 * recovery:.2f}% of predicates recovered)"
    )


def write_docbin(
    documents: List[Tuple[str, List[Sentence]]], skips: List[Skip], output: Path, report_path: Optional[Path], lang: str
) -> None:
    vocab = spacy.blank(lang).vocab
    doc_bin = DocBin(store_user_data=True)
    counts = empty_counts()
    for doc_id, sentences in documents:
        if sentences:
            doc = sentences_to_doc(vocab, sentences, doc_id=doc_id)
            doc_bin.add(doc)
            add_doc_counts(counts, doc)
    output.parent.mkdir(parents=True, exist_ok=True)
    doc_bin.to_disk(output)
    report = {"all": split_report(counts, skips)}
    report_path = report_path or output.with_suffix(".report.json")
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf8")
    for s in skips:
        msg.warn(f"skipped {s.path}:{s.line}: {s.reason}")
    msg.good(
        f"Wrote {output}: {counts['documents']} docs, {counts['sentences']} sentences, "
        f"{counts['predicates']} predicates, {counts['arguments']} arguments; report {report_path}"
    )


def input_files(path: Path, patterns: Tuple[str, ...]) -> List[Path]:
    if not path.exists():
        msg.fail(f"Input {path} does not exist", exits=1)
    files = [path] if path.is_file() else sorted(f for p in patterns for f in path.rglob(p))
    if not files:
        msg.fail(f"No files matching {', '.join(patterns)} under {path}", exits=1)
    return files


@app.command("conll12")
def convert_conll12(
    input_path: Path = typer.Argument(
        ..., help="A CoNLL-2012 `*_conll` file or a folder of them (searched recursively)"
    ),
    output: Path = typer.Argument(..., help="The .spacy file to write"),
    report: Optional[Path] = typer.Option(None, help="Report JSON (default: OUTPUT with .report.json)"),
    lang: str = typer.Option("en", help="spaCy language of the Docs"),
):
    """Convert CoNLL-2012 (OntoNotes `*_conll`, words present): one Doc per document part."""
    documents, skips = [], []
    for path in input_files(input_path, ("*_conll",)):
        docs, file_skips = read_conll12(path)
        documents.extend(docs)
        skips.extend(file_skips)
    write_docbin(documents, skips, output, report, lang)


@app.command("conll05")
def convert_conll05(
    input_path: Path = typer.Argument(
        ..., help="A CoNLL-2005 file: WORD [columns ...] TARGET PROPS..., or a folder of *.txt/*.props"
    ),
    output: Path = typer.Argument(..., help="The .spacy file to write"),
    sentences_per_doc: int = typer.Option(
        10, min=1, help="Consecutive sentences per Doc (the format has no documents)"
    ),
    pos_column: Optional[int] = typer.Option(None, help="0-based column holding PTB POS tags, if any"),
    report: Optional[Path] = typer.Option(None, help="Report JSON (default: OUTPUT with .report.json)"),
    lang: str = typer.Option("en", help="spaCy language of the Docs"),
):
    """Convert CoNLL-2005 columns (roles renamed A0 -> ARG0, AM-TMP -> ARGM-TMP)."""
    documents, skips = [], []
    for path in input_files(input_path, ("*.txt", "*.props", "*.conll")):
        docs, file_skips = read_conll05(path, sentences_per_doc, pos_column)
        documents.extend(docs)
        skips.extend(file_skips)
    write_docbin(documents, skips, output, report, lang)


if __name__ == "__main__":
    app()
