"""Training checkpoints: what `pipeline.train` writes so that a later run resumes where it stopped.

A checkpoint is the pipeline's weights (`nlp.to_disk`) beside a pickled state: both optimizers'
per-parameter tables under names that stay the same across processes, the step, the evaluations,
the random states, the position in the shuffled corpus and the config it was trained with.
"""

import pickle
import random
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy
import torch
from spacy.language import Language
from spacy.util import registry
from thinc.api import Config, Optimizer, get_array_module, get_current_ops
from wasabi import msg

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pkl"
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
