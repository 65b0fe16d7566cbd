"""Bulk annotation of Parquet stores: output tables, offsets, bad input, resume and exactly-once."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from common import TEXTS, load_refs
from filelock import FileLock
from typer.testing import CliRunner

from albert_srl.pipeline.annotate import app
from albert_srl.pipeline.annotation import TABLES, AnnotateSettings, annotate_table, read_provenance

ARGUMENT_COLUMNS = [
    "doc_id", "sent_idx", "pred_token_idx", "pred_start_char", "pred_end_char", "pred_text", "pred_lemma",
    "pred_sense", "role", "arg_start_token", "arg_end_token", "arg_start_char", "arg_end_char", "arg_text", "score",
]  # fmt: skip


def corpus_texts(mini_corpus):
    return [ref.text for ref in load_refs(mini_corpus)] + TEXTS


def write_store(root: Path, texts, parts: int = 2, hive: bool = True) -> pd.DataFrame:
    """`parts` Parquet files (year=... folders when `hive`), ids 0..n-1, plus a `source` column."""
    frame = pd.DataFrame({"id": range(len(texts)), "text": texts, "source": [f"s{i % 3}" for i in range(len(texts))]})
    for k in range(parts):
        chunk = frame.iloc[k::parts]
        folder = root / f"year={2020 + k}" if hive else root
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), folder / f"part-{k}.parquet")
    return frame


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    result.said = " ".join(result.output.split())  # wasabi wraps long messages
    return result


def temporaries(output: Path):
    return [p for t in TABLES if (output / t).exists() for p in (output / t).rglob(".*.tmp-*")]


def read(output: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(output / table)


def test_annotate_store(tiny_pipeline, mini_corpus, tmp_path):
    texts = corpus_texts(mini_corpus)
    frame = write_store(tmp_path / "store", texts, parts=2)
    out = tmp_path / "out"
    result = run(tiny_pipeline, tmp_path / "store", out, "--carry", "source")
    assert result.exit_code == 0, result.output
    # one output file per input part and table, mirroring the hive folders
    for table in TABLES:
        assert sorted(p.relative_to(out / table).as_posix() for p in (out / table).rglob("*.parquet")) == [
            "year=2020/part-0.parquet",
            "year=2021/part-1.parquet",
        ]
    arguments = read(out, "arguments")
    assert list(arguments.columns)[: len(ARGUMENT_COLUMNS)] == ARGUMENT_COLUMNS and "source" in arguments
    assert len(arguments) > 10 and arguments["score"].between(0, 1).all()
    text_of = dict(zip(frame.id, frame.text))
    for row in arguments.itertuples():
        assert text_of[row.doc_id][row.arg_start_char : row.arg_end_char] == row.arg_text
        assert text_of[row.doc_id][row.pred_start_char : row.pred_end_char] == row.pred_text
        assert row.pred_start_char <= row.pred_end_char and row.arg_start_token < row.arg_end_token
    assert (arguments["source"] == arguments["doc_id"].map(dict(zip(frame.id, frame.source)))).all()
    predicates = read(out, "predicates")
    assert (predicates["pred_lemma"] == predicates["pred_sense"].str.rsplit(".", n=1).str[0]).all()
    assert predicates["arguments"].sum() == len(arguments)
    documents = read(out, "documents")
    assert sorted(documents["doc_id"]) == list(frame.id) and (documents["status"] == "ok").all()
    assert documents.set_index("doc_id")["predicates"].sum() == len(predicates)
    assert read(out, "errors").empty
    # one tokens row per token; this pipeline predicts no POS, morphology or tree
    tokens = read(out, "tokens")
    assert len(tokens) == documents["tokens"].sum() and "source" in tokens
    for row in tokens.itertuples():
        assert text_of[row.doc_id][row.start_char : row.end_char] == row.text
    assert tokens[["lemma", "pos", "morph", "head", "dep"]].isna().all().all()
    first = tokens[tokens.doc_id == frame.id[0]]
    assert list(first.token_idx) == list(range(len(first))) and first.sent_idx.is_monotonic_increasing
    # DuckDB reads the same tables, with the hive partition from the folder names
    con = duckdb.connect()
    n, years = con.execute(
        "SELECT count(*), count(DISTINCT year) "
        f"FROM read_parquet('{out}/arguments/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert (n, years) == (len(arguments), 2)
    bad = con.execute(
        f"SELECT count(*) FROM read_parquet('{out}/arguments/**/*.parquet') a "
        f"JOIN read_parquet('{tmp_path}/store/**/*.parquet') d ON a.doc_id = d.id "
        "WHERE substring(d.text, a.arg_start_char + 1, a.arg_end_char - a.arg_start_char) <> a.arg_text"
    ).fetchone()[0]
    assert bad == 0
    provenance = read_provenance(pq.read_schema(out / "arguments" / "year=2020" / "part-0.parquet"))
    assert (
        provenance["schema_version"] == "2"
        and len(provenance["config_sha256"]) == 64
        and len(provenance["weights_sha256"]) == 64
    )
    assert provenance["spacy_version"] and provenance["transformers_version"] and provenance["model_version"]


# a worker process that dies makes annotate redo its batch in-process with a warning: fail on it
@pytest.mark.filterwarnings("error:a batch failed:UserWarning", "error::UserWarning:spacy.language")
def test_core_matches_cli_and_multiprocessing(tiny_pipeline, mini_corpus, tmp_path):
    texts = corpus_texts(mini_corpus)
    write_store(tmp_path / "store", texts, parts=1, hive=False)
    out = tmp_path / "out"
    assert run(tiny_pipeline, tmp_path / "store", out, "--n-process", "2", "--batch-size", "2").exit_code == 0
    settings = AnnotateSettings(model=str(tiny_pipeline))
    tables = annotate_table(pa.table({"id": list(range(len(texts))), "text": texts}), settings)
    in_memory = tables["arguments"].to_pandas().sort_values(["doc_id", "arg_start_token", "role"], ignore_index=True)
    from_cli = read(out, "arguments").sort_values(["doc_id", "arg_start_token", "role"], ignore_index=True)
    pd.testing.assert_frame_equal(in_memory, from_cli, check_exact=False, atol=1e-5)


def test_pre_tokenized_input(tiny_pipeline, tmp_path):
    tokens = [["John", "gave", "Mary", "the", "book", "yesterday", "."], ["where-ever", "you", "end", "up"]]
    pq.write_table(pa.table({"doc": ["a", "b"], "toks": tokens}), tmp_path / "tokens.parquet")
    result = run(
        tiny_pipeline, tmp_path / "tokens.parquet", tmp_path / "out", "--id-column", "doc", "--tokens-column", "toks"
    )
    assert result.exit_code == 0, result.output
    documents = read(tmp_path / "out", "documents").set_index("doc_id")
    assert documents.loc["a", "tokens"] == 7 and documents.loc["b", "tokens"] == 4  # not re-tokenized
    joined = {"a": " ".join(tokens[0]), "b": " ".join(tokens[1])}
    arguments = read(tmp_path / "out", "arguments")
    assert not arguments.empty
    for row in arguments.itertuples():
        assert joined[row.doc_id][row.arg_start_char : row.arg_end_char] == row.arg_text


def test_bad_rows_are_reported_not_lost(tiny_pipeline, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    lone_surrogate = "bad \ud800 text".encode("utf8", "surrogatepass")
    texts = pa.array(
        [b"John gave Mary the book.", None, b"", lone_surrogate, b"She left.", b"Dup one.", b"Dup two."], pa.binary()
    ).view(pa.string())
    pq.write_table(pa.table({"id": ["a", "b", "c", "d", None, "dup", "dup"], "text": texts}), store / "1-mixed.parquet")
    huge = "John gave Mary the book yesterday. " * 30_000  # 1,050,000 characters
    pq.write_table(pa.table({"id": ["huge", "too-long"], "text": [huge, huge + huge]}), store / "2-long.parquet")
    pq.write_table(pa.table({"id": ["n1", "n2"], "text": [1, 2]}), store / "3-ints.parquet")
    (store / "4-corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    pq.write_table(pa.table({"id": ["ok"], "text": ["He said so."]}), store / "5-good.parquet")
    out = tmp_path / "out"
    result = run(tiny_pipeline, store, out, "--max-chars", 1_500_000)
    assert result.exit_code == 1, result.output
    assert "4-corrupt.parquet was not annotated" in result.said
    status = {(r.part, r.row): r.status for r in read(out, "documents").itertuples()}
    assert status == {
        ("1-mixed.parquet", 0): "ok", ("1-mixed.parquet", 1): "error", ("1-mixed.parquet", 2): "empty",
        ("1-mixed.parquet", 3): "error", ("1-mixed.parquet", 4): "error", ("1-mixed.parquet", 5): "ok",
        ("1-mixed.parquet", 6): "duplicate_id", ("2-long.parquet", 0): "ok", ("2-long.parquet", 1): "error",
        ("3-ints.parquet", 0): "error", ("3-ints.parquet", 1): "error", ("5-good.parquet", 0): "ok",
    }  # fmt: skip
    reasons = read(out, "errors").set_index(["part", "row"])["reason"]
    assert "null" in reasons[("1-mixed.parquet", 1)]
    assert "not valid UTF-8" in reasons[("1-mixed.parquet", 3)]
    assert "id is null" in reasons[("1-mixed.parquet", 4)]
    assert "duplicate id" in reasons[("1-mixed.parquet", 6)]
    assert "--max-chars" in reasons[("2-long.parquet", 1)]
    assert "not string" in reasons[("3-ints.parquet", 0)]
    assert read(out, "documents").set_index("doc_id").loc["huge", "tokens"] > 200_000
    manifest = json.loads((out / "_manifest.json").read_text())
    assert set(manifest["failed_parts"]) == {"4-corrupt.parquet"}
    # the corrupt part is retried on the next run; failures can be allowed
    again = run(tiny_pipeline, store, out, "--max-chars", 1_500_000, "--no-fail-on-errors")
    assert again.exit_code == 0 and "4 already done, 1 to annotate" in again.said


def test_clear_errors_before_any_work(tiny_pipeline, tmp_path):
    pq.write_table(pa.table({"key": [1], "body": ["A text."]}), tmp_path / "in.parquet")
    result = run(tiny_pipeline, tmp_path / "in.parquet", tmp_path / "out")
    assert result.exit_code == 2 and "missing column(s) 'id', 'text'" in result.said and "key, body" in result.said
    assert not (tmp_path / "out").exists()
    result = run(
        tmp_path / "no-model", tmp_path / "in.parquet", tmp_path / "out2", "--id-column", "key", "--text-column", "body"
    )
    assert result.exit_code == 2 and "Cannot load the pipeline" in result.said
    result = run(tiny_pipeline, tmp_path / "missing", tmp_path / "out3")
    assert result.exit_code == 2 and "does not exist" in result.said
    result = run(
        tiny_pipeline,
        tmp_path / "in.parquet",
        tmp_path / "out4",
        "--id-column",
        "key",
        "--text-column",
        "body",
        "--carry",
        "key,status",
    )
    assert result.exit_code == 2 and "--carry status" in result.said
    store = tmp_path / "store"
    store.mkdir()
    pq.write_table(pa.table({"id": [1], "text": ["A text."]}), store / "a.parquet")
    pq.write_table(pa.table({"id": ["x"], "text": ["A text."]}), store / "b.parquet")
    result = run(tiny_pipeline, store, tmp_path / "out5")
    assert result.exit_code == 2 and "make them agree" in result.said


def test_second_run_on_same_output_refuses(tiny_pipeline, mini_corpus, tmp_path):
    write_store(tmp_path / "store", corpus_texts(mini_corpus))
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / "_annotate.lock")):  # as an annotate run in progress holds it
        result = run(tiny_pipeline, tmp_path / "store", out)
    assert result.exit_code == 2 and "Another annotate run is writing" in result.said
    assert run(tiny_pipeline, tmp_path / "store", out).exit_code == 0
    # resuming with other settings would mix two kinds of output
    result = run(tiny_pipeline, tmp_path / "store", out, "--carry", "source")
    assert result.exit_code == 2 and "other settings" in result.said
    assert run(tiny_pipeline, tmp_path / "store", out, "--carry", "source", "--overwrite").exit_code == 0
    # output of an older table schema is not resumed into
    manifest = json.loads((out / "_manifest.json").read_text())
    (out / "_manifest.json").write_text(json.dumps({**manifest, "schema_version": "1"}))
    result = run(tiny_pipeline, tmp_path / "store", out, "--carry", "source")
    assert result.exit_code == 2 and "table schema 1" in result.said


def test_kill_minus_9_then_resume_gives_every_row_once(tiny_pipeline, mini_corpus, tmp_path):
    texts = corpus_texts(mini_corpus) * 12
    frame = write_store(tmp_path / "store", texts, parts=6)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "albert_srl.pipeline.annotate",
        str(tiny_pipeline),
        str(tmp_path / "store"),
        str(out),
        "--read-rows",
        "2",
        "--batch-size",
        "2",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "_manifest.json"
    deadline = time.time() + 120
    # kill while a part is half written, after at least one part finished
    while time.time() < deadline and proc.poll() is None:
        finished = len(json.loads(manifest.read_text())["parts"]) if manifest.exists() else 0
        if finished >= 1 and temporaries(out):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed mid-part"
    assert temporaries(out)
    result = run(tiny_pipeline, tmp_path / "store", out)
    assert result.exit_code == 0, result.output
    assert not temporaries(out) and not list(out.glob(".*.tmp-*"))
    documents = read(out, "documents")
    assert sorted(documents["doc_id"]) == list(frame.id)
    assert len(json.loads(manifest.read_text())["parts"]) == 6
    # read 2 rows at a time, written as one row group per file
    assert pq.ParquetFile(out / "documents" / "year=2020" / "part-0.parquet").metadata.num_row_groups == 1
    # a part renamed into place but not yet recorded (killed between the two) is redone, not doubled
    data = json.loads(manifest.read_text())
    data["parts"].pop("year=2021/part-1.parquet")
    manifest.write_text(json.dumps(data))
    assert run(tiny_pipeline, tmp_path / "store", out).exit_code == 0
    assert sorted(read(out, "documents")["doc_id"]) == list(frame.id)
    assert read(out, "documents")["arguments"].sum() == len(read(out, "arguments"))


@pytest.mark.parametrize("bad", ["empty.parquet", "notes.txt"])
def test_non_parquet_files_are_failed_parts(tiny_pipeline, tmp_path, bad):
    store = tmp_path / "store"
    store.mkdir()
    pq.write_table(pa.table({"id": [1], "text": ["She left."]}), store / "good.parquet")
    (store / bad).write_bytes(b"")
    (store / "_SUCCESS").write_bytes(b"")  # hidden marker files are not parts
    result = run(tiny_pipeline, store, tmp_path / "out")
    assert result.exit_code == 1 and f"part {bad} was not annotated" in result.said
    assert "2 part(s)" in result.said
    assert read(tmp_path / "out", "documents")["doc_id"].tolist() == [1]


def test_batches_bound_docs_and_characters():
    from albert_srl.pipeline.annotation import _batches

    settings = AnnotateSettings(model="unused", batch_size=3, batch_chars=10)
    todo = [("aaaa", 0), ("bbbb", 1), ("ccc", 2), ("d" * 25, 3), ("e", 4), ("f", 5), ("g", 6), ("h", 7)]
    batches = [[i for _, i in batch] for batch in _batches(todo, settings)]
    assert batches == [[0, 1], [2], [3], [4, 5, 6], [7]]
    assert [i for _, i in todo] == [i for batch in batches for i in batch]


def test_empty_part_among_typed_parts(tiny_pipeline, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": ["She left.", "He said so."]}), store / "a.parquet")
    pq.write_table(
        pa.table({"id": pa.array([], pa.null()), "text": pa.array([], pa.null())}), store / "b.parquet"
    )  # as pandas writes an empty frame
    result = run(tiny_pipeline, store, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sorted(read(tmp_path / "out", "documents")["doc_id"]) == [1, 2]
