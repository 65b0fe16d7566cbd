"""Optimizer steps on PyTorch parameters that keep each parameter's own tensor.

thinc's `PyTorchShim.finish_update` hands each parameter to the optimizer as an array view,
then wraps the returned array in a new tensor through DLPack and makes that the parameter's
data. The DLPack wrapper keeps the array alive, and the array keeps the tensor it viewed, so
every step leaves one more tensor per parameter alive: a long training run accumulates hundreds
of thousands of them, its memory grows every step and every full garbage collection walks them
all. thinc's optimizers update the array in place, so the parameter already holds the new
values; the step below copies them over only when the optimizer returned other memory."""

from types import MethodType
from typing import cast

import torch
from thinc.api import Model, Optimizer
from thinc.shims.pytorch import PyTorchShim
from thinc.types import FloatsXd
from thinc.util import torch2xp, xp2torch


def array_address(array) -> int:
    """Where an array's data starts (numpy or cupy)."""
    data = getattr(array, "data", None)
    return data.ptr if hasattr(data, "ptr") else array.ctypes.data


def finish_update_in_place(shim: PyTorchShim, optimizer: Optimizer) -> None:
    """`PyTorchShim.finish_update`, writing the new values into the parameter's own tensor."""
    for name, param in shim._model.named_parameters():
        if param.grad is None:
            continue
        if not shim._grad_scaler.found_inf:  # skip the update if any gradient overflowed
            values = param.data
            new, _ = optimizer((shim.id, name), cast(FloatsXd, torch2xp(values)), cast(FloatsXd, torch2xp(param.grad)))
            if array_address(new) != values.data_ptr() or tuple(new.shape) != tuple(values.shape):
                with torch.no_grad():
                    values.copy_(xp2torch(new, device=values.device))
        param.grad.zero_()
    shim._grad_scaler.update()


def update_in_place(model: Model) -> Model:
    """Give every PyTorch shim in `model` the in-place optimizer step (returns `model`)."""
    for node in model.walk():
        for shim in node.shims:
            if isinstance(shim, PyTorchShim):
                shim.finish_update = MethodType(finish_update_in_place, shim)
    return model
