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
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional, Tuple

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
from thinc.api import Config, Optimizer, constant, fix_random_seed
from wasabi import msg

from albert_srl.pipeline.checkpoint import (
    CHECKPOINT_DIR,
    ResumableBatches,
    TrainError,
    read_checkpoint,
    restore_random_states,
    resume,
    stop_requests,
    write_checkpoint,
)

EVALUATION_LOG = "evaluations.jsonl"
# the scores each line of the evaluation log keeps (those the pipeline has), beside step, minutes and
# the weighted score
LOGGED_SCORES = (
    "srl_f", "srl_p", "srl_r", "srl_e2e_f", "srl_pred_f", "srl_sense_acc", "sents_f",
    "pos_acc", "morph_acc", "dep_uas", "dep_las",
)  # fmt: skip


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
    batches, progress = start_or_resume(output, checkpoint, nlp, optimizer, examples, T)
    evaluate = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    frozen = T["frozen_components"]
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
                losses = progress["losses"]
                update_step(nlp, batch, optimizer, T, dropout=next(dropouts), losses=losses)
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


def start_or_resume(
    output: Path, checkpoint: Optional[Tuple[Path, dict]], nlp: Language, optimizer: Optimizer, examples: List, T: dict
) -> Tuple[ResumableBatches, dict]:
    """The batches and the progress record to train from: a fresh start in a cleaned OUTPUT, or the
    checkpoint's weights, optimizer states, random states and corpus position."""
    progress = {"step": -1, "evaluations": [], "losses": {}, "words": 0, "seconds": 0.0}
    if checkpoint is None:
        clean_output_dir(output)
        (output / EVALUATION_LOG).unlink(missing_ok=True)
        return ResumableBatches(examples, T["batcher"], T["max_epochs"]), progress
    folder, state = checkpoint
    resume(nlp, optimizer, folder, state)
    restore_random_states(state["random"])
    msg.info(f"Resuming from {folder} after step {state['step']}")
    batches = ResumableBatches(examples, T["batcher"], T["max_epochs"], state["position"])
    return batches, {key: state[key] for key in progress}


def update_step(nlp: Language, batch: List, optimizer: Optimizer, T: dict, *, dropout: float, losses: dict) -> None:
    """One training step as spaCy's loop takes it: the batch's gradients (in `accumulate_gradient`
    parts), every trainable pipe's update, then the schedules' next values."""
    frozen = T["frozen_components"]
    for subbatch in subdivide_batch(batch, T["accumulate_gradient"]):
        nlp.update(
            subbatch, drop=dropout, losses=losses, sgd=False, exclude=frozen, annotates=T["annotating_components"]
        )
    for name, pipe in nlp.pipeline:
        if name not in frozen and getattr(pipe, "is_trainable", False) and pipe.model not in (True, False, None):
            pipe.finish_update(optimizer)
    optimizer.step_schedules()


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
