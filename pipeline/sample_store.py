"""Write a sample Parquet document store from a .spacy corpus: one row per document (id, text, genre),
hive-partitioned by genre, for trying out and benchmarking `annotate`.

    python -m albert_srl.pipeline.sample_store corpus/ewt/test.spacy stores/ewt-test
"""

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import spacy
import typer
from spacy.tokens import DocBin
from wasabi import msg


def write_sample_store(corpus: Path, output: Path, parts_per_genre: int = 1, repeat: int = 1) -> int:
    """The documents of `corpus` (`repeat` times, with distinct ids); the number of rows written."""
    docs = list(DocBin().from_disk(corpus).get_docs(spacy.blank("en").vocab))
    if not docs:
        raise ValueError(f"{corpus} holds no documents")
    rows = {}
    for r in range(repeat):
        for i, doc in enumerate(docs):
            genre = doc.user_data.get("genre") or "unknown"
            doc_id = doc.user_data.get("doc_id") or f"doc{i}"
            rows.setdefault(genre, []).append((f"{doc_id}#{r}" if repeat > 1 else doc_id, doc.text))
    if output.exists():
        shutil.rmtree(output)
    for genre, items in sorted(rows.items()):
        for k in range(parts_per_genre):
            chunk = items[k::parts_per_genre]
            if not chunk:
                continue
            folder = output / f"genre={genre}"
            folder.mkdir(parents=True, exist_ok=True)
            table = pa.table(
                {"id": [i for i, _ in chunk], "text": [t for _, t in chunk]},
                schema=pa.schema([("id", pa.string()), ("text", pa.string())]),
            )
            pq.write_table(table, folder / f"part-{k}.parquet", compression="zstd")
    return sum(len(items) for items in rows.values())


def main(
    corpus: Path = typer.Argument(..., help="A .spacy file (e.g. corpus/ewt/test.spacy)", exists=True, dir_okay=False),
    output: Path = typer.Argument(..., help="Folder to write (replaced if it exists)"),
    parts_per_genre: int = typer.Option(1, "--parts-per-genre", help="Parquet files per genre folder"),
    repeat: int = typer.Option(1, "--repeat", help="Write every document this many times (for scaling benchmarks)"),
) -> None:
    """Write CORPUS's document texts as a hive-partitioned Parquet store in OUTPUT."""
    n = write_sample_store(corpus, output, parts_per_genre, repeat)
    msg.good(f"Wrote {n:,} documents to {output}")


if __name__ == "__main__":
    typer.run(main)
