"""Test-only references: naive loop kernels (``naive``) and the numerical gradient check (``gradcheck``)."""
