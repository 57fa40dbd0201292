"""Lowerings of every op kind to LLVM kernels (see ..codegen for the kernel interface)."""

from . import elementwise, lut, matmul, movement, nn, q8dot  # noqa: F401  (registration)
