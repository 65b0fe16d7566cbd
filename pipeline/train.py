"""Train a pipeline as `spacy train` does, with checkpoints that a later run resumes from.

`spacy train` cannot continue a killed run. This command runs the same loop (the config's batches,
dropout, optimizer, evaluation, logger, `model-best` and `model-last`) and writes
`OUTPUT/checkpoint` every `--checkpoint-minutes`, at the end, and when stopped with Ctrl-C or
SIGTERM: the weights, both optimizers' states (the srl head's own included), the step, the
evaluations so far, the random states and the position in the shuffled corpus. Run the same
command again and it continues from the last checkpoint, to the same weights an uninterrupted run
reaches; given a larger `--training.max_steps`, a finished run trains on.

    python -m albert_srl.pipeline.train configs/srl_trf.cfg --output training --paths.train corpus/ewt/train.spacy
"""

import json
import pickle
import random
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy
import torch
import typer
from spacy.cli._util import parse_config_overrides, setup_gpu, show_validation_error
from spacy.language import Language
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.training.loop import (
    DIR_MODEL_BEST,
    DIR_MODEL_LAST,
    clean_output_dir,
    create_before_to_disk_callback,
    create_evaluation_callback,
    subdivide_batch,
    update_meta,
)
from spacy.util import load_config, registry, resolve_dot_names
from thinc.api import Config, Optimizer, constant, fix_random_seed, get_array_module, get_current_ops
from wasabi import msg

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pkl"
EVALUATION_LOG = "evaluations.jsonl"
# the scores each line of the evaluation log keeps (those the pipeline has), beside step, minutes and
# the weighted score
LOGGED_SCORES = (
    "srl_f", "srl_p", "srl_r", "srl_e2e_f", "srl_pred_f", "srl_sense_acc", "sents_f",
    "pos_acc", "morph_acc", "dep_uas", "dep_las",
)  # fmt: skip
# training settings a resumed run may change: how long it goes on, how often it evaluates and saves
RESUMABLE_CHANGES = ("max_steps", "patience", "eval_frequency", "logger")


class TrainError(ValueError):
    """A checkpoint that cannot be resumed, with what to do about it."""


# ---------------------------------------------------------------------------------------------
# What a checkpoint holds besides the weights


def parameter_names(nlp: Language) -> Dict[Tuple[int, str], str]:
    """The optimizers' keys of every parameter, (node or shim id, name), mapped to names that are
    the same in another process: ids are handed out at run time, positions in the pipeline are not."""
    names = {}
    for pipe_name, pipe in nlp.pipeline:
        model = getattr(pipe, "model", None)
        if not hasattr(model, "walk"):
            continue
        for i, node in enumerate(model.walk()):
            for param in node.param_names:
                names[(node.id, param)] = f"{pipe_name}/{i}/{param}"
            for j, shim in enumerate(node.shims):
                torch_model = getattr(shim, "_model", None)
                if isinstance(torch_model, torch.nn.Module):
                    for param, _ in torch_model.named_parameters():
                        names[(shim.id, param)] = f"{pipe_name}/{i}/shim{j}/{param}"
    return names


OPTIMIZER_TABLES = ("mom1", "mom2", "averages", "nr_update", "last_seen")


def optimizer_state(optimizer: Optimizer, names: Dict[Tuple[int, str], str]) -> dict:
    """An optimizer's per-parameter state under stable names (schedules are replayed on resume)."""
    state = {}
    for table in OPTIMIZER_TABLES:
        values = getattr(optimizer, table, None)
        if values is None:
            continue
        unknown = [key for key in values if key not in names]
        if unknown:
            raise TrainError(f"optimizer state for parameters outside the pipeline: {unknown[:3]}")
        state[table] = {
            names[key]: to_numpy(value) if hasattr(value, "shape") else value for key, value in values.items()
        }
    return state


def to_numpy(array):
    xp = get_array_module(array)
    return array.get() if xp is not numpy else numpy.array(array)


def restore_optimizer(optimizer: Optimizer, state: dict, names: Dict[Tuple[int, str], str]) -> None:
    keys = {name: key for key, name in names.items()}
    ops = get_current_ops()
    for table, values in state.items():
        target = getattr(optimizer, table)
        missing = [name for name in values if name not in keys]
        if missing:
            raise TrainError(
                f"the checkpoint has optimizer state for parameters this pipeline lacks ({missing[:3]}): "
                "was it written by another config?"
            )
        for name, value in values.items():
            target[keys[name]] = ops.asarray(value) if isinstance(value, numpy.ndarray) else value


def random_states() -> dict:
    return {"python": random.getstate(), "numpy": numpy.random.get_state(), "torch": torch.get_rng_state()}


def restore_random_states(states: dict) -> None:
    random.setstate(states["python"])
    numpy.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def comparable_config(config: Config) -> str:
    """The config as text without the settings a resumed run may change."""
    config = Config(config).copy()
    for key in RESUMABLE_CHANGES:
        config["training"].pop(key, None)
    return config.to_str()


def same_training(saved: str, config: Config) -> bool:
    """Whether a checkpoint's config (`comparable_config`'s text) and `config` train the same way.
    Both are filled with the registered functions' defaults first, so an option added since the
    checkpoint was written, left at a default that keeps the old behaviour, does not stop a resume."""

    def filled(text: str) -> dict:
        return flat(registry.fill(Config().from_str(text, interpolate=False), validate=False))

    return filled(saved) == filled(comparable_config(config))


def flat(config: dict, prefix: str = "") -> dict:
    """A nested config as {"section.key": value}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# The corpus, batch by batch, from any position


class ResumableBatches:
    """spaCy's `create_train_batches` (shuffle the examples each epoch, then batch them) that
    remembers where it is: the epoch, that epoch's order of examples and how many of its batches
    were taken. Shuffling indices in place draws the same permutations as shuffling the examples."""

    def __init__(self, examples: List, batcher, max_epochs: int, position: Optional[dict] = None):
        if not examples:
            raise TrainError("the training corpus is empty")
        if max_epochs < 0:
            raise TrainError("streamed corpora (max_epochs = -1) cannot be resumed; set training.max_epochs >= 0")
        self.examples, self.batcher, self.max_epochs = examples, batcher, max_epochs
        position = position or {"epoch": 0, "order": list(range(len(examples))), "batches": 0, "shuffled": False}
        self.epoch, self.order = position["epoch"], list(position["order"])
        self.batches, self.shuffled = position["batches"], position["shuffled"]
        if len(self.order) != len(examples):
            raise TrainError(
                f"the checkpoint's corpus had {len(self.order)} examples, this one {len(examples)}: "
                "resume with the same training corpus"
            )

    def position(self) -> dict:
        return {"epoch": self.epoch, "order": self.order, "batches": self.batches, "shuffled": self.shuffled}

    def __iter__(self) -> Iterator[Tuple[int, List]]:
        while self.max_epochs < 1 or self.epoch != self.max_epochs:
            if not self.shuffled:
                random.shuffle(self.order)
                self.shuffled = True
            for i, batch in enumerate(self.batcher([self.examples[k] for k in self.order])):
                if i < self.batches:
                    continue  # taken before the checkpoint
                self.batches = i + 1
                yield self.epoch, batch
            self.epoch, self.batches, self.shuffled = self.epoch + 1, 0, False


# ---------------------------------------------------------------------------------------------
# Checkpoints on disk


def head_optimizers(nlp: Language) -> Dict[str, Optimizer]:
    """Pipes that step part of their model with an optimizer of their own (the srl head)."""
    return {
        name: pipe.head_optimizer
        for name, pipe in nlp.pipeline
        if isinstance(getattr(pipe, "head_optimizer", None), Optimizer)
    }


def write_checkpoint(output: Path, nlp: Language, optimizer: Optimizer, progress: dict) -> None:
    """Write OUTPUT/checkpoint in a new folder, then swap it in: a kill while writing keeps the last one."""
    names = parameter_names(nlp)
    state = {
        **progress,
        "optimizer": optimizer_state(optimizer, names),
        "head_optimizers": {name: optimizer_state(opt, names) for name, opt in head_optimizers(nlp).items()},
        "random": random_states(),
        "config": comparable_config(nlp.config),
    }
    final, partial, old = (
        output / CHECKPOINT_DIR,
        output / f"{CHECKPOINT_DIR}.partial",
        output / f"{CHECKPOINT_DIR}.old",
    )
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    nlp.to_disk(partial / "nlp")
    with open(partial / STATE_FILE, "wb") as file:
        pickle.dump(state, file, protocol=pickle.HIGHEST_PROTOCOL)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint(output: Path) -> Optional[Tuple[Path, dict]]:
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):  # .old: killed between the two renames
        folder = output / name
        if (folder / STATE_FILE).exists():
            with open(folder / STATE_FILE, "rb") as file:
                return folder, pickle.load(file)
    return None


def resume(nlp: Language, optimizer: Optimizer, folder: Path, state: dict) -> None:
    """Put the checkpoint's weights, optimizer states and schedules into a freshly initialized `nlp`."""
    if "evaluations" not in state:
        raise TrainError(f"{folder} was written by an older version of this command: delete it to start again")
    if not same_training(state["config"], nlp.config):
        raise TrainError(
            f"{folder} was written with another config (only training.{', training.'.join(RESUMABLE_CHANGES)} "
            "may change between runs): train into another --output, or delete it to start again"
        )
    nlp.from_disk(folder / "nlp")
    names = parameter_names(nlp)
    restore_optimizer(optimizer, state["optimizer"], names)
    optimizers = head_optimizers(nlp)
    for name, head_state in state["head_optimizers"].items():
        restore_optimizer(optimizers[name], head_state, names)
    zero_gradients_of_updated(nlp, [optimizer, *optimizers.values()])
    for _ in range(state["step"] + 1):  # one schedule step per training step taken
        optimizer.step_schedules()


def zero_gradients_of_updated(nlp: Language, optimizers: List[Optimizer]) -> None:
    """Zero gradients where training had left them. A PyTorch shim zeroes a parameter's gradient after
    each update and steps every parameter that has one, so a parameter that a batch does not reach
    (the srl head on a batch without predicates) still moves with its Adam momentum; freshly loaded
    parameters have none, and without this would stand still in that step."""
    updated = {key for opt in optimizers for key in opt.nr_update}
    for _, pipe in nlp.pipeline:
        for node in pipe.model.walk() if hasattr(getattr(pipe, "model", None), "walk") else ():
            for shim in node.shims:
                torch_model = getattr(shim, "_model", None)
                if not isinstance(torch_model, torch.nn.Module):
                    continue
                for name, param in torch_model.named_parameters():
                    if param.grad is None and (shim.id, name) in updated:
                        param.grad = torch.zeros_like(param)


@contextmanager
def stop_requests():
    """Ctrl-C and SIGTERM (what preemptible machines send) ask the loop to stop at the next step
    boundary, where a checkpoint is consistent; a second Ctrl-C stops at once."""
    requested = {"stop": False}
    previous = {}

    def handler(signum, frame):
        if requested["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested["stop"] = True
        msg.warn("Stopping after this step: writing a checkpoint first")

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield requested
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# ---------------------------------------------------------------------------------------------
# The loop


def train(
    config: Config,
    output: Path,
    *,
    use_gpu: int = -1,
    checkpoint_minutes: float = 5.0,
    checkpoint_steps: int = 0,
) -> Path:
    """Train like `spacy.training.loop.train`, resuming from OUTPUT/checkpoint when there is one."""
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = read_checkpoint(output)
    with show_validation_error(hint_fill=False):
        nlp = init_nlp(config, use_gpu=use_gpu)
    config = nlp.config.interpolate()
    T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    if T["seed"] is not None:
        fix_random_seed(T["seed"])
    optimizer = T["optimizer"]
    examples = list(train_corpus(nlp))
    progress = {"step": -1, "evaluations": [], "losses": {}, "words": 0, "seconds": 0.0}
    if checkpoint is None:
        clean_output_dir(output)
        (output / EVALUATION_LOG).unlink(missing_ok=True)
        batches = ResumableBatches(examples, T["batcher"], T["max_epochs"])
    else:
        folder, state = checkpoint
        resume(nlp, optimizer, folder, state)
        batches = ResumableBatches(examples, T["batcher"], T["max_epochs"], state["position"])
        progress = {key: state[key] for key in progress}
        restore_random_states(state["random"])
        msg.info(f"Resuming from {folder} after step {progress['step']}")
    evaluate = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    frozen, annotating = T["frozen_components"], T["annotating_components"]
    dropouts = constant(T["dropout"]) if isinstance(T["dropout"], float) else T["dropout"]
    for _ in range(progress["step"] + 1):
        next(dropouts)
    msg.info(f"Pipeline: {nlp.pipe_names}; learn rate {optimizer.learn_rate}")
    with nlp.select_pipes(disable=frozen):
        log_step, finalize_logger = T["logger"](nlp, sys.stdout, sys.stderr)

    def save_model(is_best: bool) -> None:
        with nlp.use_params(optimizer.averages):
            before_to_disk(nlp).to_disk(output / DIR_MODEL_LAST)
        if is_best:
            shutil.rmtree(output / DIR_MODEL_BEST, ignore_errors=True)
            shutil.copytree(output / DIR_MODEL_LAST, output / DIR_MODEL_BEST)

    def save_checkpoint() -> None:
        write_checkpoint(output, nlp, optimizer, {**progress, "position": batches.position()})

    last_checkpoint = time.monotonic()
    started = time.monotonic() - progress["seconds"]
    step = progress["step"]
    finished = done(progress, T)
    try:
        with stop_requests() as stop:
            for epoch, batch in iter(batches) if not finished else ():
                step = progress["step"] + 1
                if T["before_update"]:
                    T["before_update"](nlp, {"step": step, "epoch": epoch})
                dropout = next(dropouts)
                losses = progress["losses"]
                for subbatch in subdivide_batch(batch, T["accumulate_gradient"]):
                    nlp.update(subbatch, drop=dropout, losses=losses, sgd=False, exclude=frozen, annotates=annotating)
                for name, pipe in nlp.pipeline:
                    if (
                        name not in frozen
                        and getattr(pipe, "is_trainable", False)
                        and pipe.model not in (True, False, None)
                    ):
                        pipe.finish_update(optimizer)
                optimizer.step_schedules()
                is_best = None
                info = {"epoch": epoch, "step": step, "score": None, "other_scores": None}
                if not step % T["eval_frequency"]:
                    with nlp.use_params(optimizer.averages) if optimizer.averages else nullcontext():
                        score, other_scores = evaluate()
                    info.update(score=score, other_scores=other_scores)
                progress["words"] += sum(len(eg) for eg in batch)
                progress["step"], progress["seconds"] = step, time.monotonic() - started
                if info["score"] is not None:
                    progress["evaluations"].append(evaluation_record(info, progress["seconds"]))
                    write_evaluation_log(output, progress["evaluations"])
                    is_best = info["score"] == max(e["score"] for e in progress["evaluations"])
                info.update(
                    losses=losses,
                    checkpoints=scored_steps(progress),
                    seconds=int(progress["seconds"]),
                    words=progress["words"],
                )
                if is_best is not None:
                    with nlp.select_pipes(disable=frozen):
                        update_meta(T, nlp, info)
                    save_model(is_best)
                    info["output_path"] = str(output / DIR_MODEL_LAST)
                log_step(info if is_best is not None else None)
                if is_best is not None:
                    progress["losses"] = {}
                finished = done(progress, T)
                due = checkpoint_steps and not step % checkpoint_steps
                if finished or stop["stop"] or due or time.monotonic() - last_checkpoint >= 60 * checkpoint_minutes:
                    save_checkpoint()
                    last_checkpoint = time.monotonic()
                if finished or stop["stop"]:
                    break
    finally:
        finalize_logger()
    if not finished:
        msg.warn(f"Stopped after step {step}; run the same command again to continue from {output / CHECKPOINT_DIR}")
        raise typer.Exit(1)
    save_model(False)
    msg.good(f"Saved pipeline to output directory {output / DIR_MODEL_LAST} (step {progress['step']})")
    return output / DIR_MODEL_LAST


def evaluation_record(info: dict, seconds: float) -> dict:
    """One line of the evaluation log: when (step, training minutes) and the dev scores."""
    scores = {key: info["other_scores"][key] for key in LOGGED_SCORES if key in info["other_scores"]}
    return {"step": info["step"], "minutes": round(seconds / 60, 2), "score": info["score"], **scores}


def scored_steps(progress: dict) -> List[Tuple[float, int]]:
    """(score, step) per evaluation so far: what spaCy's logger and stopping rules read."""
    return [(e["score"], e["step"]) for e in progress["evaluations"]]


def write_evaluation_log(output: Path, evaluations: List[dict]) -> None:
    """OUTPUT/evaluations.jsonl, one line per evaluation so far (rewritten whole: a resumed run's log
    holds the evaluations before the interruption too, and none twice)."""
    lines = "".join(json.dumps(record) + "\n" for record in evaluations)
    (output / EVALUATION_LOG).write_text(lines, encoding="utf8")


def done(progress: dict, T: dict) -> bool:
    """spaCy's stopping rules: `max_steps` reached, or no better evaluation in `patience` steps."""
    step, results = progress["step"], scored_steps(progress)
    if T["max_steps"] and step >= T["max_steps"]:
        return True
    if T["patience"] and results:
        best_step = -max((score, -at) for score, at in results)[1]
        return step - best_step >= T["patience"]
    return False


app = typer.Typer(add_completion=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Training config (configs/srl_trf.cfg)", exists=True),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: model-best, model-last, checkpoint"),
    use_gpu: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, -1 for CPU"),
    checkpoint_minutes: float = typer.Option(5.0, help="Write a checkpoint at least this often (minutes)"),
    checkpoint_steps: int = typer.Option(0, help="Also write one every N steps (0: by time only)"),
):
    """Train like `spacy train` (config overrides such as --paths.train as extra options), writing
    checkpoints to OUTPUT/checkpoint; run it again to continue a stopped or killed run."""
    overrides = parse_config_overrides(ctx.args)
    setup_gpu(use_gpu)
    config = load_config(config_path, overrides=overrides, interpolate=False)
    try:
        train(config, output, use_gpu=use_gpu, checkpoint_minutes=checkpoint_minutes, checkpoint_steps=checkpoint_steps)
    except TrainError as err:
        msg.fail(f"Cannot train into {output}: {err}", exits=1)


if __name__ == "__main__":
    app()
