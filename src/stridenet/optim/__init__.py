"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules, matching ``torch.optim`` step for step.

Typical use::

    optimizer = build_optimizer("sgd", model.parameters(), lr=0.1, weight_decay=5e-4)
    schedule = build_schedule("cosine", optimizer, total_steps=epochs * len(loader),
                              steps_per_epoch=len(loader), warmup_steps=500)
    for x, y in loader:
        optimizer.zero_grad()
        ...                     # forward, backward: fills each param.grad
        optimizer.step()
        schedule.step()

Both have flat ``state_dict()``s (string -> numpy array) that ``np.savez`` can store without pickling.
"""

from stridenet.optim.adam import Adam, AdamW
from stridenet.optim.factory import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule
from stridenet.optim.onecycle import OneCycleLR
from stridenet.optim.optimizer import Optimizer
from stridenet.optim.schedule import ConstantLR, CosineAnnealingLR, LinearWarmup, Schedule, StepLR
from stridenet.optim.sgd import SGD

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineAnnealingLR",
    "LinearWarmup",
    "OneCycleLR",
    "Optimizer",
    "Schedule",
    "StepLR",
    "build_optimizer",
    "build_schedule",
]
