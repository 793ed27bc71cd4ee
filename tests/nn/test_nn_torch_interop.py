"""Weights move between stridenet and torch.nn unchanged: same parameter names, order and state_dict keys."""

from __future__ import annotations

import numpy as np
import pytest

from stridenet import nn
from stridenet.errors import ShapeError

torch = pytest.importorskip("torch")
tnn = torch.nn
from reference.torch_twins import Residual as TorchResidual  # noqa: E402  (needs torch)


def ours_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False, rng=1), nn.BatchNorm2d(4)),
                    nn.Conv2d(4, 4, 1, rng=2)),
        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5, rng=3), nn.Linear(4 * 3 * 3, 5, rng=4),
    )


def torch_model() -> tnn.Sequential:
    return tnn.Sequential(
        tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(),
        TorchResidual(tnn.Sequential(tnn.Conv2d(4, 4, 3, padding=1, bias=False), tnn.BatchNorm2d(4)),
                      tnn.Conv2d(4, 4, 1)),
        tnn.MaxPool2d(2), tnn.Flatten(), tnn.Dropout(0.5), tnn.Linear(4 * 3 * 3, 5),
    )


def batch(seed: int, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, 6, 6)).astype(dtype)


def test_parameter_names_and_order_match_torch() -> None:
    ours, theirs = ours_model(), torch_model()
    assert [(name, p.shape) for name, p in ours.named_parameters()] == \
        [(name, tuple(p.shape)) for name, p in theirs.named_parameters()]
    assert [id(p) for p in ours.parameters()] == [id(p) for _, p in ours.named_parameters()]
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())


def test_state_dict_keys_match_torch_in_order() -> None:
    ours, theirs = ours_model().state_dict(), torch_model().state_dict()
    assert list(ours) == list(theirs)
    assert {"0.weight", "1.running_mean", "1.num_batches_tracked", "3.block.0.weight", "3.shortcut.bias",
            "7.weight"} <= set(ours)
    assert all(ours[key].shape == tuple(theirs[key].shape) for key in ours)


def test_state_dict_returns_copies() -> None:
    model = ours_model()
    state = model.state_dict()
    state["0.weight"][...] = 0.0
    assert model[0].weight.data.any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weights_move_from_ours_to_torch(parity, dtype) -> None:
    ours = ours_model().astype(dtype)
    ours(batch(0, dtype))                                  # running statistics away from 0 and 1
    theirs = torch_model().to(torch.float64 if dtype == np.float64 else torch.float32)
    theirs.load_state_dict({key: torch.from_numpy(value) for key, value in ours.state_dict().items()})
    ours.eval()
    theirs.eval()
    x = batch(1, dtype)
    parity.check("state_dict transfer", "ours->torch out", ours(x), theirs(torch.from_numpy(x)))
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ours.state_dict()[key], err_msg=key)


def test_weights_move_from_torch_to_ours(parity) -> None:
    torch.manual_seed(0)
    theirs = torch_model()
    with torch.no_grad():
        for seed in (2, 3):                                # running statistics away from 0 and 1
            theirs(torch.from_numpy(batch(seed, np.float32)))
    ours = ours_model()
    ours.load_state_dict(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy(), err_msg=key)
    assert ours.state_dict()["1.num_batches_tracked"] == 2
    ours.eval()
    theirs.eval()
    x = batch(4, np.float32)
    parity.check("state_dict transfer", "torch->ours out", ours(x), theirs(torch.from_numpy(x)))


def test_load_state_dict_casts_to_the_model_dtype() -> None:
    ours = ours_model().astype(np.float64)
    ours.load_state_dict(torch_model().state_dict())      # float32 tensors into a float64 model
    assert all(p.data.dtype == p.grad.dtype == np.float64 for p in ours.parameters())


def test_load_state_dict_rejects_missing_unexpected_and_misshapen_entries() -> None:
    ours = ours_model()
    state = ours.state_dict()
    with pytest.raises(KeyError, match=r"missing keys \['0.weight'\]"):
        ours.load_state_dict({k: v for k, v in state.items() if k != "0.weight"})
    with pytest.raises(KeyError, match=r"unexpected keys \['extra'\]"):
        ours.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(ShapeError, match=r"'0.weight' expected shape \(4, 3, 3, 3\), received shape \(4, 3, 1, 1\)"):
        ours.load_state_dict({**state, "0.weight": np.zeros((4, 3, 1, 1))})


def test_batch_norm_without_running_stats_has_torch_state_dict_keys() -> None:
    assert list(nn.BatchNorm2d(3, track_running_stats=False).state_dict()) == \
        list(tnn.BatchNorm2d(3, track_running_stats=False).state_dict())
