"""Test-only references: naive loop kernels (``naive``), the numerical gradient check (``gradcheck``) and
memory layouts (``layouts``)."""
