"""torch modules for the layers torch.nn lacks, named so their state_dict keys equal ours.

Only imported by tests that have already checked torch is installed.
"""

from __future__ import annotations

import torch

from reference.naive import tf_same_padding


class TfSameConv2d(torch.nn.Conv2d):
    """Conv2d with TensorFlow's 'same' padding for any stride (torch allows 'same' for stride 1 only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [tf_same_padding(x.shape[2 + d], self.kernel_size[d], self.stride[d], self.dilation[d])
                for d in range(2)]
        x = torch.nn.functional.pad(x, (*pads[1], *pads[0]))
        return torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Residual(torch.nn.Module):
    """block(x) + shortcut(x), the shortcut the identity when None, as stridenet.nn.Residual."""

    def __init__(self, block: torch.nn.Module, shortcut: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))
