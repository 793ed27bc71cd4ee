"""SGD, Adam and AdamW against torch.optim: same weights, same gradients, weights compared after every step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stridenet.nn.layer import Parameter
from stridenet.optim import SGD, Adam, AdamW

torch.set_num_threads(1)

SHAPES = [(4, 3, 3, 3), (7,), (5, 6)]
STEPS = 20
RTOL = {np.float64: 1e-12, np.float32: 1e-6}

# (our class, torch class, keyword arguments shared by both)
CASES = [
    (SGD, torch.optim.SGD, {"lr": 0.1}),
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.05}),
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 0.1}),
    (Adam, torch.optim.Adam, {}),
    (Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    (Adam, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
    (Adam, torch.optim.Adam, {"lr": 0.02, "betas": (0.3, 0.9), "eps": 1e-6, "weight_decay": 0.01, "amsgrad": True}),
    (AdamW, torch.optim.AdamW, {}),
    (AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    (AdamW, torch.optim.AdamW, {"lr": 0.01, "betas": (0.5, 0.99), "weight_decay": 0.3, "amsgrad": True}),
]


def _ids(case: tuple) -> str:
    cls, _, kwargs = case
    return f"{cls.__name__}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def _problem(dtype: type, seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial weights and STEPS rounds of gradients for the three parameter shapes."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return init, grads


def _assert_close(ours: np.ndarray, theirs: np.ndarray, rtol: float, what: str) -> None:
    """Relative to the array's scale, so elements crossing zero do not blow the relative error up."""
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * float(np.abs(theirs).max()), err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_matches_torch_every_step(case: tuple, dtype: type) -> None:
    cls, torch_cls, kwargs = case
    init, grads = _problem(dtype, seed=len(_ids(case)))
    params = [Parameter(a.copy()) for a in init]
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    ours, theirs = cls(params, **kwargs), torch_cls(tensors, foreach=False, **kwargs)
    for step, round_grads in enumerate(grads, start=1):
        for p, t, g in zip(params, tensors, round_grads, strict=True):
            p.grad[...] = g
            t.grad = torch.tensor(g)
        ours.step()
        theirs.step()
        for i, (p, t) in enumerate(zip(params, tensors, strict=True)):
            assert p.data.dtype == dtype and p.grad.dtype == dtype
            _assert_close(p.data, t.detach().numpy(), RTOL[dtype], f"step {step}, param {i}")
            np.testing.assert_array_equal(p.grad, round_grads[i], err_msg="the optimizer changed .grad")
    assert ours.step_count == STEPS


@pytest.mark.parametrize("case", [CASES[5], CASES[10], CASES[13]], ids=_ids)
def test_learning_rate_changed_between_steps(case: tuple) -> None:
    """A schedule writes ``optimizer.lr``; torch reads ``param_groups[0]['lr']``: both used from the next step."""
    cls, torch_cls, kwargs = case
    init, grads = _problem(np.float64, seed=7)
    params = [Parameter(a.copy()) for a in init]
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    ours, theirs = cls(params, **kwargs), torch_cls(tensors, foreach=False, **kwargs)
    for step, round_grads in enumerate(grads):
        lr = 0.02 * (1.5 + np.sin(step))
        ours.lr = lr
        theirs.param_groups[0]["lr"] = lr
        for p, t, g in zip(params, tensors, round_grads, strict=True):
            p.grad[...] = g
            t.grad = torch.tensor(g)
        ours.step()
        theirs.step()
        for p, t in zip(params, tensors, strict=True):
            _assert_close(p.data, t.detach().numpy(), 1e-12, f"step {step}")


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_mixed_dtypes_keep_their_dtype(cls: type) -> None:
    params = [Parameter(np.ones((2, 3), dtype=np.float32)), Parameter(np.ones(4, dtype=np.float64))]
    opt = cls(params, lr=0.1, weight_decay=0.1, **({"momentum": 0.9} if cls is SGD else {}))
    for _ in range(3):
        for p in params:
            p.grad[...] = 0.5
        opt.step()
    assert [p.data.dtype for p in params] == [np.float32, np.float64]
    assert all(buf.dtype == p.data.dtype for bufs in opt.state.values() for buf, p in zip(bufs, params, strict=True))
    assert np.all(params[0].data < 1) and np.allclose(params[0].data, params[1].data[0], rtol=1e-6)


def test_zero_grad_clears_every_gradient() -> None:
    params = [Parameter(np.ones(3)), Parameter(np.ones((2, 2), dtype=np.float32))]
    opt = SGD(params, lr=0.1)
    for p in params:
        p.grad[...] = 3.0
    opt.zero_grad()
    assert all(not p.grad.any() for p in params)


def test_params_are_updated_in_place() -> None:
    data = np.ones(3)
    p = Parameter(data)
    p.grad[...] = 1.0
    Adam([p], lr=0.1).step()
    assert p.data is data and np.allclose(data, 0.9)


BAD_ARGS = [
    (SGD, {"lr": -0.1}, r"SGD: expected lr in \[0, inf\), received -0.1"),
    (SGD, {"lr": float("nan")}, "SGD: expected lr"),
    (SGD, {"lr": 0.1, "momentum": 1.0}, r"SGD: expected momentum in \[0, 1\), received 1.0"),
    (SGD, {"lr": 0.1, "momentum": -0.5}, "SGD: expected momentum"),
    (SGD, {"lr": 0.1, "dampening": 1.5}, r"SGD: expected dampening in \[0, 1\]"),
    (SGD, {"lr": 0.1, "weight_decay": -1e-4}, "SGD: expected weight_decay"),
    (SGD, {"lr": 0.1, "nesterov": True}, "SGD: nesterov=True requires momentum > 0 and dampening = 0"),
    (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, "received momentum=0.9, dampening=0.1"),
    (Adam, {"lr": -1.0}, "Adam: expected lr"),
    (Adam, {"betas": (1.0, 0.999)}, r"Adam: expected betas\[0\] in \[0, 1\), received 1.0"),
    (Adam, {"betas": (0.9, -0.1)}, r"Adam: expected betas\[1\]"),
    (Adam, {"betas": 0.9}, r"Adam: expected betas as a pair \(beta1, beta2\), received 0.9"),
    (Adam, {"eps": -1e-8}, "Adam: expected eps"),
    (Adam, {"weight_decay": -0.1}, "Adam: expected weight_decay"),
    (AdamW, {"betas": (0.9, 1.5)}, r"AdamW: expected betas\[1\] in \[0, 1\), received 1.5"),
    (AdamW, {"weight_decay": float("inf")}, "AdamW: expected weight_decay"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD_ARGS, ids=[f"{c.__name__}{k}" for c, k, _ in BAD_ARGS])
def test_bad_hyperparameters_raise(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls([Parameter(np.zeros(2))], **kwargs)


def test_bad_parameter_lists_raise() -> None:
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="SGD: expected at least one parameter"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="Adam: a parameter appears more than once"):
        Adam([p, p])
    with pytest.raises(TypeError, match="SGD: expected Parameter objects, received ndarray at index 1"):
        SGD([p, np.zeros(2)], lr=0.1)


def test_repr_lists_hyperparameters() -> None:
    p = Parameter(np.zeros(2))
    assert repr(SGD([p], lr=0.1, momentum=0.9)) == (
        "SGD(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)")
    assert repr(AdamW([p])) == "AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, amsgrad=False)"
