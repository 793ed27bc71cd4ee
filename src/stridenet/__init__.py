"""stridenet: convolutional networks from first principles on NumPy.

Every layer's forward and backward pass is written by hand (``stridenet.functional``), wrapped in
PyTorch-compatible layers (``stridenet.nn``). ``stridenet.set_num_threads(n)`` and
``get_num_threads()`` set and tell how many threads the kernels split a batch across (default: the
cores this process may use, or ``STRIDENET_NUM_THREADS``); ``with stridenet.num_threads(n):`` sets
it for a block.
"""

__version__ = "0.1.0"

_THREAD_SETTINGS = ("get_num_threads", "num_threads", "set_num_threads")


def __getattr__(name: str) -> object:
    # imported on first use, so that ``import stridenet`` stays quick
    if name in _THREAD_SETTINGS:
        from stridenet.functional import _parallel

        return getattr(_parallel, name)
    raise AttributeError(f"module 'stridenet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_THREAD_SETTINGS])
