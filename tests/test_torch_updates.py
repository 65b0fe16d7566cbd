import gc

import numpy
import spacy
import torch
from thinc.api import Adam, PyTorchWrapper_v2, fix_random_seed
from thinc.shims.pytorch import PyTorchShim

from albert_srl.components.torch_updates import update_in_place


class LinearLSTM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 6)
        self.lstm = torch.nn.LSTM(6, 4, batch_first=True)

    def forward(self, X):
        return self.lstm(self.linear(X)[None])[0][0]


def trained(in_place: bool, steps: int):
    """A small PyTorch model after `steps` Adam updates, how many tensors the steps left alive, and
    whether its parameters moved to other memory."""
    fix_random_seed(0)
    model = PyTorchWrapper_v2(LinearLSTM())
    if in_place:
        update_in_place(model)
    optimizer = Adam(0.01)
    X = model.ops.asarray2f(numpy.random.RandomState(0).rand(5, 8))
    Y, backprop = model.begin_update(X)  # the first step creates the optimizer's state
    backprop(Y - 1.0)
    model.finish_update(optimizer)
    gc.collect()
    before = sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())
    addresses = [param.data_ptr() for param in model.shims[0]._model.parameters()]
    for _ in range(steps):
        Y, backprop = model.begin_update(X)
        backprop(Y - 1.0)
        model.finish_update(optimizer)
    del Y, backprop
    gc.collect()
    after = sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())
    module = model.shims[0]._model
    moved = [param.data_ptr() for param in module.parameters()] != addresses
    return module, after - before, moved


def test_in_place_updates_give_thincs_weights():
    ours = trained(in_place=True, steps=20)[0]
    thincs = trained(in_place=False, steps=20)[0]
    start = trained(in_place=True, steps=0)[0]
    for (name, mine), (_, theirs), (_, first) in zip(
        ours.named_parameters(), thincs.named_parameters(), start.named_parameters()
    ):
        assert torch.equal(mine, theirs) and not torch.equal(mine, first), name


def test_new_arrays_from_the_optimizer_are_copied_in():
    """An optimizer that returns other memory (as on a GPU) still updates the parameter, in place."""
    model = update_in_place(PyTorchWrapper_v2(torch.nn.Linear(3, 2)))
    X = model.ops.asarray2f(numpy.ones((4, 3)))
    Y, backprop = model.begin_update(X)
    backprop(Y + 1.0)
    module = model.shims[0]._model
    address, expected = module.weight.data_ptr(), module.weight.detach() - 0.5 * module.weight.grad
    model.finish_update(lambda key, weights, gradient: (weights - 0.5 * gradient, gradient))
    assert torch.allclose(module.weight.detach(), expected) and module.weight.data_ptr() == address
    assert not module.weight.grad.any()


def test_in_place_updates_leave_no_tensor_behind():
    module, left, moved = trained(in_place=True, steps=50)
    assert left <= 0 and not moved
    assert all(param.grad is not None and not param.grad.any() for param in module.parameters())
    # thinc's own update keeps one more tensor per parameter and step alive (6 parameters here)
    left = trained(in_place=False, steps=50)[1]
    assert left > 4 * 50


def test_pipeline_models_update_in_place(trf_nlp, tiny_pipeline):
    for nlp in (trf_nlp[0], spacy.load(tiny_pipeline)):
        shims = [shim for _, pipe in nlp.pipeline for node in pipe.model.walk() for shim in node.shims]
        torch_shims = [shim for shim in shims if isinstance(shim, PyTorchShim)]
        assert len(torch_shims) == 2  # the encoder and the srl head
        assert all("finish_update" in vars(shim) for shim in torch_shims)
