"""What a benchmark ran on (CPU, cores, threads, GPU), and whether a GPU can run spaCy here."""

import os
import platform
from datetime import date
from pathlib import Path
from typing import Dict, Optional

import spacy
import torch
from thinc.util import has_cupy_gpu
from wasabi import msg

from albert_srl.pipeline.benchmark.pipelines import check_precision


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(gpu_id: int = -1) -> Dict:
    """The date, CPU, cores, PyTorch threads and Python version (and the GPU, PyTorch and CUDA
    versions where `gpu_id` names one) that a report's header shows."""
    info = {
        "date": date.today().isoformat(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if gpu_id >= 0:
        info.update(
            gpu=torch.cuda.get_device_name(gpu_id), gpu_id=gpu_id, torch=torch.__version__, cuda=torch.version.cuda
        )
    return info


def gpu_problem(gpu_id: int) -> Optional[str]:
    """Why GPU `gpu_id` cannot run spaCy here, or None if it can."""
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)"
    if gpu_id >= torch.cuda.device_count():
        return f"PyTorch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
    if not has_cupy_gpu:
        return (
            "spaCy runs on GPUs through CuPy, which is not installed "
            "(pip install cupy-cuda12x, or the build for your CUDA)"
        )
    return None


def check_gpu(gpu_id: int, precision: Optional[str] = None) -> None:
    """A benchmark command's --gpu-id (and --precision): fail at once, saying why, rather than in a
    child process."""
    problem = gpu_problem(gpu_id) if gpu_id >= 0 else None
    if problem:
        msg.fail(f"--gpu-id {gpu_id}: {problem}. Leave out --gpu-id to benchmark on the CPU.", exits=1)
    if precision is not None:
        try:
            check_precision(precision, gpu_id >= 0)
        except (ValueError, RuntimeError) as error:
            hint = " (fp16 is a GPU precision: add --gpu-id)" if precision == "fp16" and gpu_id < 0 else ""
            msg.fail(f"--precision: {error}{hint}", exits=1)


def use_gpu(gpu_id: int) -> bool:
    """Put this (child) process's spaCy and PyTorch work on GPU `gpu_id`; False for the CPU (-1)."""
    if gpu_id < 0:
        return False
    problem = gpu_problem(gpu_id)
    if problem:
        raise RuntimeError(f"--gpu-id {gpu_id}: {problem}")
    spacy.require_gpu(gpu_id)
    return True
