"""The resumable training command: an interrupted run resumed ends where an uninterrupted one does,
and an uninterrupted run is `spacy train`'s."""

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import spacy
import torch
from common import FP32, REPO
from spacy.util import load_config
from typer.testing import CliRunner

from albert_srl.pipeline.checkpoint import CHECKPOINT_DIR, STATE_FILE
from albert_srl.pipeline.train import EVALUATION_LOG, app, train

runner = CliRunner()


def overrides(corpus, encoder, max_steps: int) -> dict:
    """The tiny transformer pipeline: several batches an epoch (so a checkpoint falls mid-epoch), an
    evaluation every 3 steps (so model-best changes hands across a resume), dropout on."""
    return {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "paths.encoder": str(encoder),
        "components.srl.model.hidden_width": 64,
        **FP32,
        "corpora.train.max_length": 8,  # the fixture's train document, cut into its sentences
        "training.batcher.size": 10,
        "training.batcher.discard_oversize": False,
        "training.max_steps": max_steps,
        "training.eval_frequency": 3,
        "training.logger.progress_bar": False,
    }


def config(corpus, encoder, max_steps: int):
    return load_config(REPO / "configs" / "srl_trf.cfg", overrides=overrides(corpus, encoder, max_steps))


def weights(path) -> dict:
    """Every parameter of a saved pipeline, by pipe and position."""
    nlp = spacy.load(path)
    result = {}
    for name, pipe in nlp.pipeline:
        for i, node in enumerate(pipe.model.walk()):
            for param in node.param_names:
                if node.has_param(param):
                    result[f"{name}/{i}/{param}"] = torch.tensor(node.get_param(param))
            for j, shim in enumerate(node.shims):
                for param, value in shim._model.state_dict().items():
                    result[f"{name}/{i}/{j}/{param}"] = value
    return result


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [key for key in wa if not torch.equal(wa[key], wb[key])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def straight_run(mini_corpus, tiny_albert, tmp_path_factory):
    output = tmp_path_factory.mktemp("straight")
    train(config(mini_corpus, tiny_albert, 8), output)
    return output


def test_resumed_run_ends_with_the_uninterrupted_weights(straight_run, mini_corpus, tiny_albert, tmp_path):
    train(config(mini_corpus, tiny_albert, 4), tmp_path)
    with open(tmp_path / CHECKPOINT_DIR / STATE_FILE, "rb") as file:
        state = pickle.load(file)
    assert state["step"] == 4 and state["position"]["batches"] > 0
    assert state["head_optimizers"]["srl"]["mom1"]  # the srl head's own Adam state travels too
    train(config(mini_corpus, tiny_albert, 8), tmp_path)
    assert_same_weights(straight_run / "model-last", tmp_path / "model-last")
    assert_same_weights(straight_run / "model-best", tmp_path / "model-best")
    straight, resumed = evaluation_log(straight_run), evaluation_log(tmp_path)
    assert [line["step"] for line in resumed] == [0, 3, 6]  # each evaluation once, across the resume
    assert [line["srl_f"] for line in resumed] == [line["srl_f"] for line in straight]
    assert all(a["minutes"] <= b["minutes"] for a, b in zip(resumed, resumed[1:]))


def evaluation_log(output) -> list:
    return [json.loads(line) for line in (output / EVALUATION_LOG).read_text().splitlines()]


def test_uninterrupted_run_is_spacy_train(straight_run, mini_corpus, tiny_albert, tmp_path):
    from spacy.cli.train import train as spacy_train

    spacy_train(REPO / "configs" / "srl_trf.cfg", tmp_path, overrides=overrides(mini_corpus, tiny_albert, 8))
    assert_same_weights(straight_run / "model-last", tmp_path / "model-last")


KILLER = """
import os, signal
from spacy.util import registry

@registry.callbacks("test.kill_at_step.v1")
def kill_at_step(step: int):
    def callback(nlp, info):
        if info["step"] == step and os.environ.get("KILL_TRAINING"):
            os.kill(os.getpid(), signal.SIGKILL)
    return callback

from albert_srl.pipeline.train import app
app()
"""


def test_killed_run_resumes(mini_corpus, tiny_albert, tmp_path):
    """SIGKILL at the start of step 6 (checkpoints every 2 steps): the rerun goes on after step 4."""
    killing = config(mini_corpus, tiny_albert, 8)
    killing["training"]["before_update"] = {"@callbacks": "test.kill_at_step.v1", "step": 6}
    killing.to_disk(tmp_path / "config.cfg")
    output = tmp_path / "training"
    command = [
        sys.executable,
        "-c",
        KILLER,
        str(tmp_path / "config.cfg"),
        "--output",
        str(output),
        "--checkpoint-steps",
        "2",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The uninterrupted reference runs in a fresh process too: earlier tests in this process may have
    # changed process-wide torch settings (threads) that move the last bits of the float sums.
    uninterrupted = subprocess.run([*command[:4], "--output", str(tmp_path / "straight"), *command[6:]], env=env)
    assert uninterrupted.returncode == 0
    killed = subprocess.run(command, capture_output=True, text=True, env={**env, "KILL_TRAINING": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert not (output / "model-last" / "meta.json").exists() or "(step 8)" not in killed.stdout
    resumed = subprocess.run(command, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Resuming" in resumed.stdout and "after step 4" in resumed.stdout.replace("\n", " ")
    assert_same_weights(tmp_path / "straight" / "model-last", output / "model-last")


def test_a_checkpoint_of_another_config_is_refused(straight_run, mini_corpus, tiny_albert, tmp_path):
    train(config(mini_corpus, tiny_albert, 2), tmp_path)
    args = [f"--{key}={json.dumps(value)}" for key, value in overrides(mini_corpus, tiny_albert, 4).items()]
    result = runner.invoke(
        app, [str(REPO / "configs" / "srl_trf.cfg"), "--output", str(tmp_path), *args, "--training.dropout=0.3"]
    )
    assert result.exit_code == 1
    assert "another config" in result.output and str(tmp_path) in result.output


def test_a_checkpoint_from_before_a_new_option_resumes(mini_corpus, tiny_albert, tmp_path):
    """A checkpoint written before an option existed resumes when the option is at its default."""
    import pickle

    train(config(mini_corpus, tiny_albert, 2), tmp_path)
    state_file = tmp_path / "checkpoint" / "state.pkl"
    state = pickle.loads(state_file.read_bytes())
    assert "layer_mix = false\n" in state["config"]
    state_file.write_bytes(pickle.dumps({**state, "config": state["config"].replace("layer_mix = false\n", "")}))
    args = [f"--{key}={json.dumps(value)}" for key, value in overrides(mini_corpus, tiny_albert, 4).items()]
    result = runner.invoke(app, [str(REPO / "configs" / "srl_trf.cfg"), "--output", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.output
