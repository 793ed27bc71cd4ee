"""Exceptions raised by stridenet, so callers can tell a bad shape from a bad file."""


class ShapeError(ValueError):
    """An input or hyperparameter does not fit the layer it is given to.

    Kernels raise it with what is wrong and the shapes involved; a layer that calls a kernel
    re-raises it prefixed with its own description, e.g.
    ``Conv2d(3, 16, kernel_size=5): expected input with 3 channels, received shape (8, 1, 28, 28)``.
    ``located`` is True once a layer has put its name on the message, so containers pass it on as is.
    """

    located: bool = False


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or of the wrong format."""


class CheckpointError(ValueError):
    """A checkpoint or run folder is missing, malformed or incompatible with the model."""
