"""The timing harness: child processes with their wall time and peak RSS, passes timed in turn
within one process, and the peak GPU memory of a process."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

# Each measurement runs in its own process (a child command of this CLI), so peak RSS is its own.
BENCHMARK_MODULE = "albert_srl.pipeline.benchmark"


def run_measured(command: List[str]) -> Dict:
    """Run a child process; its wall time and peak RSS (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"wall_s": time.perf_counter() - started, "peak_rss_mb": usage.ru_maxrss / 1024}


def run_child(*args: str) -> Dict:
    """Run a command of this CLI (usually a hidden `*-child` one) in its own process, measured."""
    return run_measured([sys.executable, "-m", BENCHMARK_MODULE, *args])


def manifest_totals(output: Path) -> Dict:
    """Parts, rows, words and annotating seconds of a finished annotate output."""
    parts = json.loads((output / "_manifest.json").read_text())["parts"].values()
    return {
        "parts": len(parts),
        "docs": sum(p["rows"] for p in parts),
        "words": sum(p["tokens"] for p in parts),
        "seconds": sum(p["seconds"] for p in parts),
    }


def timed(run: Callable[[], Any], on_gpu: bool) -> Tuple[Any, float]:
    """run()'s result and seconds; on a GPU, once its queued kernels have finished."""
    started = time.perf_counter()
    value = run()
    if on_gpu:
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


def timed_in_turn(
    passes: Dict[str, Callable[[], Any]], rounds: int, on_gpu: bool
) -> Tuple[List[Dict[str, float]], Dict[str, Any]]:
    """Each pass timed once a round, one after another in this process, the order rotating from
    round to round (two passes alternate), so a drift in the machine's speed lands on every side:
    each round's seconds by pass, and each pass's last result. Timings in separate processes vary
    from run to run by more than several of the effects measured here."""
    names, timings, results = list(passes), [], {}
    for i in range(rounds):
        seconds = {}
        for name in names[i % len(names) :] + names[: i % len(names)]:
            results[name], seconds[name] = timed(passes[name], on_gpu)
        timings.append(seconds)
    return timings, results


def gpu_memory(on_gpu: bool) -> Dict:
    """Peak GPU memory PyTorch allocated in this process (CuPy's arrays come from the same allocator
    under thinc)."""
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if on_gpu else {}
