"""The LLVM CPU backend (installed as ``ladder.backends.llvm``): kernels generated with llvmlite, optimised
with LLVM's new pass manager for a ladder Target, run through MCJIT."""
