"""Lowerings: movement ops."""
