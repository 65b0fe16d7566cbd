"""The annotate job on a Dask LocalCluster: the same output as one process, and a killed worker's
part redone, not duplicated."""

import pandas as pd
import pytest
import spacy
from common import REPO
from test_annotate import corpus_texts, read, run, temporaries, write_store

distributed = pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'albert-srl[dask]')"
)

KILLER = REPO / "tests" / "dask_worker_killer.py"


def sorted_table(out, table):
    frame = read(out, table).drop(columns=["year"], errors="ignore")
    keys = {
        "arguments": ["doc_id", "pred_token_idx", "arg_start_token", "role"],
        "predicates": ["doc_id", "pred_token_idx"],
        "tokens": ["doc_id", "token_idx"],
        "documents": ["doc_id"],
    }[table]
    return frame.sort_values(keys, ignore_index=True)


def assert_same_output(a, b):
    for table in ("arguments", "predicates", "tokens", "documents"):
        pd.testing.assert_frame_equal(sorted_table(a, table), sorted_table(b, table), check_exact=False, atol=1e-5)


def test_dask_local_cluster_matches_one_process(tiny_pipeline, mini_corpus, tmp_path):
    write_store(tmp_path / "store", corpus_texts(mini_corpus) * 2, parts=4)
    result = run(tiny_pipeline, tmp_path / "store", tmp_path / "dask", "--engine", "dask", "--workers", 2)
    assert result.exit_code == 0, result.output
    assert "Dask: 2 worker(s)" in result.said
    assert run(tiny_pipeline, tmp_path / "store", tmp_path / "local").exit_code == 0
    assert_same_output(tmp_path / "dask", tmp_path / "local")
    # a re-run skips the finished parts
    again = run(tiny_pipeline, tmp_path / "store", tmp_path / "dask", "--engine", "dask", "--workers", 2)
    assert again.exit_code == 0 and "4 already done, 0 to annotate" in again.said


def test_killed_worker_part_is_redone_not_duplicated(tiny_pipeline, mini_corpus, tmp_path):
    import dask_worker_killer  # noqa: F401  registers the factory here, as the preload does on workers

    marker = tmp_path / "killed"
    nlp = spacy.load(tiny_pipeline)
    nlp.add_pipe("kill_worker_once", config={"marker": str(marker)})
    nlp.to_disk(tmp_path / "model")
    texts = corpus_texts(mini_corpus) * 2
    texts[5] = f"{dask_worker_killer.KILL_TEXT} John gave Mary the book."
    frame = write_store(tmp_path / "store", texts, parts=3)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, preload=[str(KILLER)], dashboard_address=None
    ) as cluster:
        result = run(
            tmp_path / "model",
            tmp_path / "store",
            tmp_path / "dask",
            "--engine",
            "dask",
            "--scheduler",
            cluster.scheduler_address,
            "--read-rows",
            2,
        )
    assert result.exit_code == 0, result.output
    assert marker.exists(), "no worker was killed"
    documents = read(tmp_path / "dask", "documents")
    assert sorted(documents["doc_id"]) == list(frame.id) and (documents["status"] == "ok").all()
    assert not temporaries(tmp_path / "dask")
    assert run(tmp_path / "model", tmp_path / "store", tmp_path / "local").exit_code == 0
    assert_same_output(tmp_path / "dask", tmp_path / "local")
