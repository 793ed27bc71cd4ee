"""stridenet: convolutional networks from first principles on NumPy.

Every layer's forward and backward pass is written by hand (``stridenet.functional``), wrapped in
PyTorch-compatible layers (``stridenet.nn``).
"""

__version__ = "0.1.0"
