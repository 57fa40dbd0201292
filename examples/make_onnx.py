"""Write a small ONNX model to try ``ladder import`` and ``ladder run`` on (needs the ``onnx`` extra).

    python examples/make_onnx.py model.onnx

The model is what a quantizing exporter leaves: y = (relu(x @ dequant(W1) + b1) @ W2) * alpha, where W1 is int8
with one scale and zero point per tensor and alpha is a scalar (0-d initializers, as exports write them); the
batch dimension is symbolic (``--shape x=1x64`` fixes it).
"""

from __future__ import annotations

import sys

import numpy as np


def tiny_mlp(hidden: int = 64, ffn: int = 128, out: int = 16, seed: int = 0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.integers(-127, 128, (hidden, ffn)).astype(np.int8), "w1_q"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w1_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w1_zero"),
        numpy_helper.from_array((rng.standard_normal(ffn) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((ffn, out)) / np.sqrt(ffn)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(0.5, np.float32), "alpha"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "w1_zero"], ["w1"]),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["z"]),
        helper.make_node("Mul", ["z", "alpha"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tiny_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/make_onnx.py OUT.onnx", file=sys.stderr)
        return 2
    import onnx

    model = tiny_mlp()
    onnx.checker.check_model(model)
    onnx.save(model, argv[0])
    print(f"wrote {argv[0]}: x[batch, 64] -> y[batch, 16], int8 weights with per-tensor scale")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
