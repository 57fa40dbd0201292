"""Lowerings: matmul ops."""
