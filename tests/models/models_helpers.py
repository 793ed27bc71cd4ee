"""Helpers for the models tests: a torch twin of any stridenet model, and per-layer torch facts.

The twin has the same module names as our model (``0``, ``3.block.1``, ...), so a summary row's path
finds the torch module it describes.
"""

from __future__ import annotations

import math

import torch

from reference.torch_twins import Residual, TfSameConv2d
from stridenet import nn

tnn = torch.nn


class GlobalAvgPool(tnn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def torch_twin(layer: nn.Layer) -> tnn.Module:
    """A torch module with the same architecture (weights left at torch's own initialisation)."""
    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*[torch_twin(child) for child in layer])
    if isinstance(layer, nn.Residual):
        return Residual(torch_twin(layer.block), None if layer.shortcut is None else torch_twin(layer.shortcut))
    if isinstance(layer, nn.Conv2d):
        same_strided = layer.padding == "same" and layer.stride != (1, 1)
        cls = TfSameConv2d if same_strided else tnn.Conv2d
        return cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                   0 if same_strided else layer.padding, layer.dilation, layer.groups, layer.bias is not None)
    if isinstance(layer, nn.MaxPool2d):
        return tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode)
    if isinstance(layer, nn.AvgPool2d):
        return tnn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode, layer.count_include_pad)
    if isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d)):
        cls = tnn.BatchNorm2d if isinstance(layer, nn.BatchNorm2d) else tnn.BatchNorm1d
        return cls(layer.num_features, layer.eps, layer.momentum, layer.weight is not None, layer.track_running_stats)
    if isinstance(layer, nn.Linear):
        return tnn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    simple = {nn.GlobalAvgPool2d: GlobalAvgPool, nn.Flatten: tnn.Flatten, nn.ReLU: tnn.ReLU, nn.Identity: tnn.Identity}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, nn.LeakyReLU):
        return tnn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, nn.Dropout):
        return tnn.Dropout(layer.p)
    raise TypeError(f"no torch twin for {layer!r}")


def torch_facts(model: nn.Layer, input_shape: tuple[int, ...]) -> dict[str, dict]:
    """Per module path: output shape (no batch axis), parameters, float buffers and conv/linear MACs,
    measured on the torch twin with one forward pass."""
    twin = torch_twin(model).eval()
    facts: dict[str, dict] = {}

    def hook(name: str):
        def record(module: tnn.Module, inputs: tuple, output: torch.Tensor) -> None:
            macs = 0
            if isinstance(module, tnn.Conv2d):
                macs = output[0].numel() * module.weight[0].numel()
            elif isinstance(module, tnn.Linear):
                macs = output[0].numel() * module.in_features
            facts[name] = {
                "output_shape": tuple(output.shape[1:]),
                "params": sum(p.numel() for p in module.parameters()),
                "non_trainable": sum(b.numel() for b in module.buffers() if b.is_floating_point()),
                "macs": macs,
            }
        return record

    for name, module in twin.named_modules():
        if name:
            module.register_forward_hook(hook(name))
    with torch.no_grad():
        twin(torch.zeros((1, *input_shape)))
    facts[""] = {"params": sum(p.numel() for p in twin.parameters()),
                 "macs": sum(f["macs"] for f in facts.values()), "size": math.prod(input_shape)}
    return facts
