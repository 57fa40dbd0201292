"""The op table: which ONNX ops the importer converts, and the function that converts each.

A converter is registered with ``@converts("Op", ...)`` next to its code; the supported-op lists, the
unsupported-op error and the node-test selection all read this one table."""

from __future__ import annotations

from typing import Callable

ONNX_DOMAIN = "ai.onnx"
MS_DOMAIN = "com.microsoft"

# (domain, op_type) -> converter(importer); the importer's current node is the one to convert.
CONVERTERS: dict[tuple[str, str], Callable] = {}


def converts(*op_types: str, domain: str = ONNX_DOMAIN):
    def deco(fn: Callable) -> Callable:
        for t in op_types:
            if (domain, t) in CONVERTERS:
                raise RuntimeError(f"two converters for {domain}.{t}")
            CONVERTERS[(domain, t)] = fn
        return fn
    return deco


def domain_of(node) -> str:
    return node.domain if node.domain not in ("", ONNX_DOMAIN) else ONNX_DOMAIN


def supported(domain: str = ONNX_DOMAIN) -> tuple[str, ...]:
    return tuple(sorted(t for d, t in CONVERTERS if d == domain))
