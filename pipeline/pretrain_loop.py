"""The build of an encoder: inputs, the training loop, checkpoints and the output folder.

OUTPUT/checkpoint/state.pt holds everything an interrupted build needs to go on as if it never
stopped: the weights, the optimizer, the teacher's statistics, the counters, the settings a
resumed build must share, and the random states of the masks and of torch.
"""

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from wasabi import msg

from albert_srl.components.transformer import fuse_tanh_gelu
from albert_srl.pipeline.pretrain_data import (
    Chunk,
    ChunkEncoder,
    batch_stream,
    chunk_stream,
    collate,
    collate_all,
    held_out_chunks,
    read_documents,
    split_held_out,
)
from albert_srl.pipeline.pretrain_model import (
    Losses,
    Pretrainer,
    autocast_dtype,
    count_parameters,
    init_embeddings_from_teacher,
    load_student,
    load_teacher,
    pick_device,
)
from albert_srl.pipeline.pretrain_settings import PretrainError, PretrainSettings

CHECKPOINT = "checkpoint/state.pt"
METRICS = "pretrain-metrics.json"
LOG = "pretrain-log.jsonl"
LOG_EVERY = 10  # steps between log lines


def pretrain(
    output: Path,
    settings: PretrainSettings,
    gpu_id: int = -1,
    checkpoint_minutes: float = 5.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, object]:
    """Build (or resume building) the encoder in `output`; returns the final metrics."""
    start_wall = time.perf_counter()
    if settings.minutes <= 0 and settings.max_steps <= 0:
        raise PretrainError("Give the build a budget: --minutes above 0 or --max-steps above 0.")
    device = pick_device(gpu_id)
    dtype = autocast_dtype(settings.precision, device)
    checkpoint = read_checkpoint(output, settings, overwrite)
    build = prepare(settings, device, dtype)
    state = start(build, settings, checkpoint, output)
    params = parameter_counts(build.trainer)
    describe(build, params, dtype)
    batches = training_batches(build, settings, skip=state["step"])
    generator = torch.Generator().manual_seed(settings.seed)
    if checkpoint is not None and "generator" in checkpoint:
        generator.set_state(checkpoint["generator"])  # the masks (and dropout) go on as if never interrupted
        torch.set_rng_state(checkpoint["torch_rng"])
    train(build, settings, batches, state, generator, output, checkpoint_minutes, progress, checkpoint is not None)
    heldout = build.trainer.evaluate(build.eval_batches, settings.seed)
    metrics = final_metrics(build, settings, state, params, heldout, dtype, start_wall)
    write_output(output, build.trainer, settings, metrics)
    return metrics


# ---------------------------------------------------------------------------------------------
# Inputs (all loaded and checked before any long work)


@dataclass
class Build:
    """What a build works with: the models, the chunker and the texts."""

    trainer: Pretrainer
    teacher_tokenizer: Optional[object]
    encoder: ChunkEncoder
    training: List[str]
    n_eval_chunks: int
    eval_batches: List[dict]
    pad_ids: Tuple[int, int]  # the student's and the teacher's padding id

    def collate(self, chunks: List[Chunk]) -> dict:
        return collate(chunks, *self.pad_ids, self.trainer.device)


def prepare(settings: PretrainSettings, device, dtype) -> Build:
    """Load the student, the teacher and the texts; everything wrong with the inputs is found here."""
    torch.manual_seed(settings.seed)  # the new student's initial weights
    student, tokenizer = load_student(settings)
    fuse_tanh_gelu(student)  # gelu_new as one fused kernel (same formula; the saved config keeps gelu_new)
    teacher, teacher_tokenizer = load_teacher(settings.teacher)
    documents = read_documents(settings.texts, settings.text_column)
    encoder = ChunkEncoder(tokenizer, teacher_tokenizer, settings.max_words, settings.piece_limit())
    training, held_out = split_held_out(documents)
    eval_chunks = held_out_chunks(held_out, encoder, settings.eval_chunks)
    pad_ids = (tokenizer.pad_token_id, teacher_tokenizer.pad_token_id if teacher_tokenizer else 0)
    eval_batches = collate_all(eval_chunks, settings.batch_size, *pad_ids, device)
    trainer = Pretrainer(settings, student, tokenizer, teacher, device, dtype)
    return Build(trainer, teacher_tokenizer, encoder, training, len(eval_chunks), eval_batches, pad_ids)


def start(build: Build, settings: PretrainSettings, checkpoint: Optional[dict], output: Path) -> Dict[str, object]:
    """The counters to start from: the checkpoint's (its weights loaded), or zero for a fresh student."""
    trainer = build.trainer
    if checkpoint is not None:
        state = restore_checkpoint(trainer, checkpoint)
        msg.info(
            f"Resuming the build in {output} at step {state['step']:,} "
            f"({state['words']:,} words, {state['seconds'] / 60:.1f} minutes done)"
        )
        return state
    if trainer.teacher is not None and not settings.init and settings.teacher_embeddings:
        mapped = init_embeddings_from_teacher(
            trainer.student, trainer.tokenizer, trainer.teacher, build.teacher_tokenizer
        )
        msg.info(
            f"Student embeddings started from the teacher's: {mapped:,} of "
            f"{trainer.student.config.vocab_size:,} pieces mapped"
        )
    trainer.calibrate(build.eval_batches)
    return {"step": 0, "words": 0, "tokens": 0, "seconds": 0.0}


def parameter_counts(trainer: Pretrainer) -> Dict[str, Optional[int]]:
    teacher = trainer.teacher
    return {
        "student_parameters": count_parameters(trainer.student.albert),
        "teacher_parameters": count_parameters(teacher) if teacher is not None else None,
    }


def describe(build: Build, params: Dict[str, Optional[int]], dtype) -> None:
    with_teacher = build.trainer.teacher is not None
    msg.info(
        f"Student: {params['student_parameters']:,} parameters"
        + (f"; teacher: {params['teacher_parameters']:,}" if with_teacher else "; no teacher (MLM + SOP only)")
        + f"; {len(build.training):,} training documents, {build.n_eval_chunks} held-out chunks; "
        f"{build.trainer.device}, {'bf16' if dtype else 'fp32'}"
    )


def training_batches(build: Build, settings: PretrainSettings, skip: int) -> Iterator[List[Chunk]]:
    """The batches of training chunks, the first `skip` passed over (tokenizing only) to resume."""
    batches = batch_stream(
        chunk_stream(build.training, build.encoder, settings.seed), settings.batch_size, settings.seed
    )
    for _ in range(skip):
        next(batches)
    return batches


# ---------------------------------------------------------------------------------------------
# Checkpoints


def read_checkpoint(output: Path, settings: PretrainSettings, overwrite: bool) -> Optional[dict]:
    """The checkpoint of an interrupted build in `output`, or None to start anew."""
    path = output / CHECKPOINT
    if not path.exists() or overwrite:
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if checkpoint["settings"] != settings.resume_key():
        changed = sorted(k for k, v in settings.resume_key().items() if checkpoint["settings"].get(k) != v)
        raise PretrainError(
            f"{output} holds a build with other settings ({', '.join(changed)}). "
            "Run with the same settings to resume, or --overwrite to start over."
        )
    return checkpoint


def save_checkpoint(
    path: Path, trainer: Pretrainer, settings: PretrainSettings, state: Dict[str, object], generator
) -> None:
    """Write everything a resumed build needs: the one place the checkpoint's contents are set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "student": trainer.student.state_dict(),
        "projections": trainer.projections.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "teacher_mean": getattr(trainer, "teacher_mean", None),
        "teacher_std": getattr(trainer, "teacher_std", None),
        **state,
        "settings": settings.resume_key(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a kill during the save leaves the previous checkpoint


def restore_checkpoint(trainer: Pretrainer, checkpoint: dict) -> Dict[str, object]:
    """Load the checkpoint's weights, optimizer and teacher statistics; returns its counters."""
    trainer.student.load_state_dict(checkpoint["student"])
    trainer.projections.load_state_dict(checkpoint["projections"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint["teacher_mean"] is not None:
        trainer.teacher_mean.copy_(checkpoint["teacher_mean"])
        trainer.teacher_std.copy_(checkpoint["teacher_std"])
    return {k: checkpoint[k] for k in ("step", "words", "tokens", "seconds")}


# ---------------------------------------------------------------------------------------------
# The training loop


class Schedule:
    """How far the build is (the larger of its time and step budgets spent), and the rates that follow."""

    def __init__(self, settings: PretrainSettings, distilling: bool):
        self.settings = settings
        self.budget_seconds = settings.minutes * 60
        self.distilling = distilling

    def progress(self, state: Dict[str, object]) -> float:
        fractions = [state["seconds"] / self.budget_seconds if self.budget_seconds > 0 else 0.0]
        if self.settings.max_steps:
            fractions.append(state["step"] / self.settings.max_steps)
        return max(fractions)

    def learning_rate(self, p: float) -> float:
        s = self.settings
        if p < s.warmup:
            return s.lr * max(p / s.warmup, 0.01)
        return s.lr * max(0.1, 1 - (p - s.warmup) / (1 - s.warmup))

    def mlm_weight(self, p: float) -> float:
        """Ramped up over the first half: early on the teacher's signal is the richer one."""
        return self.settings.mlm_weight * min(1.0, 0.2 + 1.6 * p) if self.distilling else 1.0


def train(
    build: Build,
    settings: PretrainSettings,
    batches: Iterator[List[Chunk]],
    state: Dict[str, object],
    generator,
    output: Path,
    checkpoint_minutes: float,
    progress: bool,
    resumed: bool,
) -> None:
    """Take steps until the budget is spent, logging every few steps and checkpointing every few minutes."""
    trainer = build.trainer
    schedule = Schedule(settings, distilling=trainer.teacher is not None)
    checkpoint_path, log_path = output / CHECKPOINT, output / LOG
    output.mkdir(parents=True, exist_ok=True)
    running = Losses()
    last_checkpoint = time.perf_counter()
    session_start, seconds_before = time.perf_counter(), state["seconds"]
    bar = progress_bar(progress, schedule.progress(state))
    trainer.student.train()
    restart_log(log_path, resumed, state["step"])
    with log_path.open("a", encoding="utf8") as log:
        try:
            while schedule.progress(state) < 1.0:
                chunk_batch = next(batches, None)
                if chunk_batch is None:
                    raise PretrainError("The texts gave no chunks.")
                batch = build.collate(chunk_batch)
                p = schedule.progress(state)
                logged = train_step(trainer, batch, schedule.learning_rate(p), schedule.mlm_weight(p), generator)
                state["step"] += 1
                state["words"] += batch["n_words"]
                state["tokens"] += int(batch["s_mask"].sum())
                state["seconds"] = seconds_before + time.perf_counter() - session_start
                for name, (value, count) in logged.items():
                    running.add(name, value, count)
                if state["step"] % LOG_EVERY == 0 or schedule.progress(state) >= 1.0:
                    report(log, bar, state, schedule.learning_rate(p), running.means(), schedule.progress(state))
                    running = Losses()
                if time.perf_counter() - last_checkpoint >= checkpoint_minutes * 60:
                    save_checkpoint(checkpoint_path, trainer, settings, state, generator)
                    last_checkpoint = time.perf_counter()
        except KeyboardInterrupt:
            save_checkpoint(checkpoint_path, trainer, settings, state, generator)
            raise
    bar.close()
    save_checkpoint(checkpoint_path, trainer, settings, state, generator)


def train_step(trainer: Pretrainer, batch: dict, lr: float, mlm_weight: float, generator) -> Dict[str, tuple]:
    """One optimizer step on a batch; returns the logged (value, count) of each loss."""
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    loss, logged = trainer.losses(batch, mlm_weight, generator)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([q for g in trainer.optimizer.param_groups for q in g["params"]], 1.0)
    trainer.optimizer.step()
    return logged


def progress_bar(enabled: bool, progress: float):
    from tqdm import tqdm

    bar = tqdm(total=1000, disable=not enabled, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
    bar.update(int(1000 * min(progress, 1.0)))
    return bar


def restart_log(log_path: Path, resumed: bool, step: int) -> None:
    """Keep the log lines of the steps the checkpoint holds (none on a fresh start)."""
    lines = log_path.read_text(encoding="utf8").splitlines() if resumed and log_path.exists() else []
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    log_path.write_text("".join(line + "\n" for line in kept), encoding="utf8")


def report(log, bar, state: Dict[str, object], lr: float, means: Dict[str, float], progress: float) -> None:
    """A log line of the steps since the last one, and the progress bar's figures."""
    log.write(
        json.dumps(
            {
                "step": state["step"],
                "words": state["words"],
                "seconds": round(state["seconds"], 1),
                "lr": lr,
                **{k: round(v, 4) for k, v in means.items()},
            }
        )
        + "\n"
    )
    log.flush()
    rate = state["words"] / max(state["seconds"], 1e-9)
    tokens_rate = state["tokens"] / max(state["seconds"], 1e-9)
    bar.set_postfix_str(
        f"step {state['step']:,} {tokens_rate:,.0f} tokens/s {rate:,.0f} words/s "
        + " ".join(f"{k} {v:.3f}" for k, v in means.items())
    )
    bar.n = int(1000 * min(progress, 1.0))
    bar.refresh()


# ---------------------------------------------------------------------------------------------
# Output


def final_metrics(
    build: Build,
    settings: PretrainSettings,
    state: Dict[str, object],
    params: Dict[str, Optional[int]],
    heldout: Dict[str, float],
    dtype,
    start_wall: float,
) -> Dict[str, object]:
    """The build's figures, the run's wall time and the settings."""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        **params,
        "steps": state["step"],
        "words_seen": state["words"],
        "tokens_seen": state["tokens"],
        "minutes": state["seconds"] / 60,
        "words_per_second": state["words"] / max(state["seconds"], 1e-9),
        "tokens_per_second": state["tokens"] / max(state["seconds"], 1e-9),
        "chunks_dropped_too_long": build.encoder.dropped,
        "heldout": heldout,
        "device": str(build.trainer.device),
        "precision": "bf16" if dtype else "fp32",
        "wall_seconds_this_run": time.perf_counter() - start_wall,
        "settings": asdict(settings),
    }


def write_output(output: Path, trainer: Pretrainer, settings: PretrainSettings, metrics: Dict[str, object]) -> None:
    """The Hugging Face ALBERT folder, its metrics and an ENCODER.md that says how it was built."""
    trainer.student.save_pretrained(output, safe_serialization=True)
    trainer.tokenizer.save_pretrained(output)
    (output / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf8")
    (output / "ENCODER.md").write_text(encoder_card(trainer.student.config, settings, metrics), encoding="utf8")


def encoder_card(c, settings: PretrainSettings, metrics: Dict[str, object]) -> str:
    heldout = metrics["heldout"]
    distilled = (
        f" + word-level distillation from {settings.teacher} ({metrics['teacher_parameters']:,} parameters)"
        if settings.teacher
        else ""
    )
    distill_mse = (
        f", distillation MSE {heldout['distill']:.3f} (1.0 = predicting the mean)" if "distill" in heldout else ""
    )
    return (
        f"ALBERT built by `python -m albert_srl.pipeline.pretrain` on {metrics['date']}.\n"
        f"Shape: embedding {c.embedding_size}, hidden {c.hidden_size}, {c.num_hidden_layers} layers sharing "
        f"{c.num_hidden_groups} group(s), {c.num_attention_heads} heads, FFN {c.intermediate_size}; "
        f"{metrics['student_parameters']:,} encoder parameters.\n"
        f"Objectives: masked LM + sentence-order prediction{distilled}.\n"
        f"Seen: {metrics['words_seen']:,} words in {metrics['steps']:,} steps, {metrics['minutes']:.1f} minutes.\n"
        f"Held-out: MLM accuracy {heldout.get('mlm_acc', float('nan')):.3f}, "
        f"SOP accuracy {heldout.get('sop_acc', float('nan')):.3f}{distill_mse}.\n"
    )
