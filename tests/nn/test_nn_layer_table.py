"""One table of layer cases drives the shape tests, the PyTorch parity of whole layers and the layer contract.

Each case: our layer, the equivalent torch module, an input shape and the expected output shape.
The contract checked for every case: backward before forward is an error, backward adds into
``.grad``, ``zero_grad`` clears it, dtype in = dtype out (float32 and float64), an input whose dtype
differs from the parameters' is a ShapeError, and ``no_grad()`` keeps no cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from stridenet import nn
from stridenet.errors import ShapeError

torch = pytest.importorskip("torch")
tnn = torch.nn
from reference.torch_twins import Residual as TorchResidual  # noqa: E402  (needs torch)
from reference.torch_twins import TfSameConv2d  # noqa: E402


class LayerCase(NamedTuple):
    ours: Callable[[], nn.Layer]
    theirs: Callable[[], tnn.Module]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


CASES = {
    "Conv2d": LayerCase(lambda: nn.Conv2d(3, 8, 3, rng=0), lambda: tnn.Conv2d(3, 8, 3), (2, 3, 8, 8), (2, 8, 6, 6)),
    "Conv2d-stride-pad": LayerCase(lambda: nn.Conv2d(3, 6, 5, stride=2, padding=2, rng=0),
                                   lambda: tnn.Conv2d(3, 6, 5, stride=2, padding=2), (2, 3, 9, 9), (2, 6, 5, 5)),
    "Conv2d-rect-dilated-groups": LayerCase(
        lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=False, rng=0),
        lambda: tnn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=False),
        (2, 4, 7, 8), (2, 6, 4, 6)),
    "Conv2d-depthwise-same": LayerCase(lambda: nn.Conv2d(4, 4, 3, padding="same", groups=4, rng=0),
                                       lambda: tnn.Conv2d(4, 4, 3, padding="same", groups=4), (2, 4, 7, 7),
                                       (2, 4, 7, 7)),
    "Conv2d-same-stride2": LayerCase(lambda: nn.Conv2d(3, 5, 4, stride=2, padding="same", rng=0),
                                     lambda: TfSameConv2d(3, 5, 4, stride=2), (1, 3, 7, 7), (1, 5, 4, 4)),
    "Conv2d-valid": LayerCase(lambda: nn.Conv2d(2, 3, 3, padding="valid", rng=0),
                              lambda: tnn.Conv2d(2, 3, 3, padding="valid"), (1, 2, 5, 5), (1, 3, 3, 3)),
    "MaxPool2d": LayerCase(lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (2, 3, 8, 8), (2, 3, 4, 4)),
    "MaxPool2d-overlap-pad-ceil": LayerCase(lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
                                            lambda: tnn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
                                            (1, 2, 8, 8), (1, 2, 5, 5)),
    "MaxPool2d-dilation": LayerCase(lambda: nn.MaxPool2d(2, stride=1, dilation=2),
                                    lambda: tnn.MaxPool2d(2, stride=1, dilation=2), (1, 2, 6, 6), (1, 2, 4, 4)),
    "AvgPool2d": LayerCase(lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2), (2, 3, 8, 8), (2, 3, 4, 4)),
    "AvgPool2d-pad-ceil-exclude": LayerCase(
        lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        lambda: tnn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (1, 2, 8, 8), (1, 2, 5, 5)),
    "GlobalAvgPool2d": LayerCase(nn.GlobalAvgPool2d, lambda: tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten()),
                                 (2, 3, 5, 5), (2, 3)),
    "Linear": LayerCase(lambda: nn.Linear(12, 5, rng=0), lambda: tnn.Linear(12, 5), (4, 12), (4, 5)),
    "Linear-3d-no-bias": LayerCase(lambda: nn.Linear(6, 3, bias=False, rng=0), lambda: tnn.Linear(6, 3, bias=False),
                                   (2, 4, 6), (2, 4, 3)),
    "Flatten": LayerCase(nn.Flatten, tnn.Flatten, (2, 3, 4, 4), (2, 48)),
    "ReLU": LayerCase(nn.ReLU, tnn.ReLU, (2, 3, 4, 4), (2, 3, 4, 4)),
    "LeakyReLU": LayerCase(lambda: nn.LeakyReLU(0.2), lambda: tnn.LeakyReLU(0.2), (3, 5), (3, 5)),
    "Dropout": LayerCase(lambda: nn.Dropout(0.3, rng=0), lambda: tnn.Dropout(0.3), (4, 6), (4, 6)),
    "Identity": LayerCase(nn.Identity, tnn.Identity, (2, 3), (2, 3)),
    "BatchNorm2d": LayerCase(lambda: nn.BatchNorm2d(3), lambda: tnn.BatchNorm2d(3), (4, 3, 5, 5), (4, 3, 5, 5)),
    "BatchNorm2d-no-affine": LayerCase(lambda: nn.BatchNorm2d(3, affine=False, momentum=None),
                                       lambda: tnn.BatchNorm2d(3, affine=False, momentum=None),
                                       (4, 3, 2, 2), (4, 3, 2, 2)),
    "BatchNorm1d": LayerCase(lambda: nn.BatchNorm1d(6), lambda: tnn.BatchNorm1d(6), (8, 6), (8, 6)),
    "BatchNorm1d-3d": LayerCase(lambda: nn.BatchNorm1d(4, eps=1e-3, momentum=0.3),
                                lambda: tnn.BatchNorm1d(4, eps=1e-3, momentum=0.3), (5, 4, 7), (5, 4, 7)),
    "Sequential-cnn": LayerCase(
        lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(4 * 4 * 4, 10, rng=1)),
        lambda: tnn.Sequential(tnn.Conv2d(1, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2),
                               tnn.Flatten(), tnn.Linear(4 * 4 * 4, 10)),
        (2, 1, 8, 8), (2, 10)),
    "Residual-identity": LayerCase(
        lambda: nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
                                          nn.Conv2d(4, 4, 3, padding=1, rng=1))),
        lambda: TorchResidual(tnn.Sequential(tnn.Conv2d(4, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(),
                                             tnn.Conv2d(4, 4, 3, padding=1))),
        (2, 4, 6, 6), (2, 4, 6, 6)),
    "Residual-1x1-shortcut": LayerCase(
        lambda: nn.Residual(nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1, rng=0), nn.ReLU(),
                                          nn.Conv2d(6, 6, 3, padding=1, rng=1)), nn.Conv2d(3, 6, 1, stride=2, rng=2)),
        lambda: TorchResidual(tnn.Sequential(tnn.Conv2d(3, 6, 3, stride=2, padding=1), tnn.ReLU(),
                                             tnn.Conv2d(6, 6, 3, padding=1)), tnn.Conv2d(3, 6, 1, stride=2)),
        (2, 3, 7, 7), (2, 6, 4, 4)),
}
WITH_PARAMETERS = [name for name, case in CASES.items() if case.ours().parameters()]


def build(name: str, dtype=np.float32) -> nn.Layer:
    return CASES[name].ours().astype(dtype)


def inputs(name: str, seed: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """An input and an output gradient for case ``name``."""
    rng = np.random.default_rng(seed)
    case = CASES[name]
    return rng.standard_normal(case.input_shape).astype(dtype), rng.standard_normal(case.output_shape).astype(dtype)


def grads(layer: nn.Layer) -> dict[str, np.ndarray]:
    return {name: p.grad.copy() for name, p in layer.named_parameters()}


def torch_twin(layer: nn.Layer, name: str, dtype) -> tnn.Module:
    """The torch module of case ``name`` holding our layer's parameters and buffers."""
    module = CASES[name].theirs().to(torch.float64 if dtype == np.float64 else torch.float32)
    module.load_state_dict({key: torch.from_numpy(value) for key, value in layer.state_dict().items()})
    return module.train(layer.training)


@pytest.mark.parametrize("name", CASES)
def test_output_shape_matches_the_table_and_torch(name: str) -> None:
    case = CASES[name]
    x, _ = inputs(name, seed=0)
    assert build(name)(x).shape == case.output_shape
    assert tuple(case.theirs()(torch.from_numpy(x)).shape) == case.output_shape


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
def test_layer_matches_torch_with_the_same_weights(parity, name: str, dtype) -> None:
    """Forward, dx, every parameter gradient and the buffers after one step (running statistics)."""
    layer = build(name, dtype)
    if isinstance(layer, nn.Dropout):
        layer.eval()                                    # the masks are random; compare the identity
    module = torch_twin(layer, name, dtype)
    x, dout = inputs(name, seed=1, dtype=dtype)
    xt = torch.tensor(x, requires_grad=True)
    out_t = module(xt)
    out_t.backward(torch.from_numpy(dout))
    parity.check("layer table", f"{name} out", layer(x), out_t)
    parity.check("layer table", f"{name} dx", layer.backward(dout), xt.grad)
    torch_params = dict(module.named_parameters())
    assert [n for n, _ in layer.named_parameters()] == list(torch_params)
    # gradients relative to the model's largest: a conv bias feeding batch norm has a gradient of 0
    largest = max((float(p.grad.abs().max()) for p in torch_params.values()), default=0.0)
    for param_name, p in layer.named_parameters():
        parity.check("layer table", f"{name} d{param_name}", p.grad, torch_params[param_name].grad, floor=largest)
    torch_state = module.state_dict()
    for key, value in layer.state_dict().items():
        parity.check("layer table", f"{name} {key}", value, torch_state[key])


@pytest.mark.parametrize("name", CASES)
def test_backward_before_forward_is_a_clear_error(name: str) -> None:
    layer = build(name)
    _, dout = inputs(name, seed=2)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(dout)


@pytest.mark.parametrize("name", CASES)
def test_no_grad_keeps_no_cache(name: str) -> None:
    layer = build(name)
    x, dout = inputs(name, seed=3)
    with nn.no_grad():
        out = layer(x)
    assert out.shape == CASES[name].output_shape
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(dout)


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_backward_adds_into_grad_and_zero_grad_clears_it(name: str) -> None:
    (x1, d1), (x2, d2) = inputs(name, seed=4, dtype=np.float64), inputs(name, seed=5, dtype=np.float64)
    single = []
    for x, d in ((x1, d1), (x2, d2)):
        fresh = build(name, np.float64)
        fresh(x)
        fresh.backward(d)
        single.append(grads(fresh))
    layer = build(name, np.float64)
    for x, d in ((x1, d1), (x2, d2)):
        layer(x)
        layer.backward(d)
    for param_name, grad in grads(layer).items():
        np.testing.assert_allclose(grad, single[0][param_name] + single[1][param_name], rtol=1e-12, atol=1e-12)
    layer.zero_grad()
    assert all(not grad.any() for grad in grads(layer).values())
    layer(x2)
    layer.backward(d2)
    for param_name, grad in grads(layer).items():
        np.testing.assert_allclose(grad, single[1][param_name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CASES)
def test_dtype_in_equals_dtype_out(name: str, dtype) -> None:
    layer = build(name, dtype)
    x, dout = inputs(name, seed=6, dtype=dtype)
    assert layer(x).dtype == dtype
    assert layer.backward(dout).dtype == dtype
    for param_name, p in layer.named_parameters():
        assert p.data.dtype == p.grad.dtype == dtype, param_name
    for key, value in layer.state_dict().items():
        assert value.dtype == (np.int64 if key.endswith("num_batches_tracked") else dtype), key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_input_dtype_other_than_the_parameters_is_a_shape_error(name: str, dtype) -> None:
    other = np.float64 if dtype == np.float32 else np.float32
    layer = build(name, dtype)
    x, _ = inputs(name, seed=7, dtype=other)
    first = next(module for module in layer.modules() if vars(module).get("weight") is not None)
    with pytest.raises(ShapeError) as error:
        layer(x)
    message = str(error.value)
    assert message.startswith(f"{first!r}: expected input of dtype {np.dtype(dtype)}"), message
    assert f"received {np.dtype(other)} with shape {x.shape}" in message
