"""ONNX models side by side: ladder (cpu target) against ONNX Runtime on the same files, at 1 and 2 threads,
as milliseconds per forward pass and the ratio ORT / ladder (> 1: ladder is faster).

    python benchmarks/bench_onnx.py [--repeat 50] [--threads 1,2] [--models llama_dynamo,...]

Models: the committed fixtures (tests/fixtures/onnx: tiny seeded Llama / GPT-2 / BERT, hidden 64, 2 layers,
8 tokens), as the issue measured them:
* fp32: ``llama_dynamo`` (the raw dynamo export), ``gpt2_dynamo``, ``bert_dynamo``;
* 4-bit: ``llama_nbits`` (MatMulNBits, block 32, asymmetric);
* int8 QDQ: ``llama_qdq``, made here from llama_dynamo with ``onnxruntime.quantization.quantize_static``
  (QDQ format, per-tensor int8 activations and weights, calibrated on the fixture's input);
* int8 dynamic: ``llama_dynquant`` (DynamicQuantizeLinear + MatMulInteger).
ORT runs with its default graph optimizations (ORT_ENABLE_ALL) and ``intra_op_num_threads``; ladder compiles
once per model with the default pipeline and runs with ``threads``. Each figure is the median of ``--repeat``
runs after warm-up. Both run through their ordinary call, as a user calls them: ``m(args, threads=t)``
(inputs bound and fresh output arrays each call) against ``sess.run(None, feeds)``; neither uses its
pre-bound path (``m.bind()`` / ORT's io_binding). Needs onnxruntime (not a test dependency).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import ladder
from ladder.frontends import onnx as lo

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
MODELS = ("llama_dynamo", "gpt2_dynamo", "bert_dynamo", "llama_nbits", "llama_qdq", "llama_dynquant")
KIND = {"llama_nbits": "4-bit", "llama_qdq": "int8 QDQ", "llama_dynquant": "int8 dyn"}


def _feeds(name):
    d = np.load(os.path.join(FIXTURES, ("llama_dynamo" if name == "llama_qdq" else name) + ".npz"))
    return {k[3:]: d[k] for k in d.files if k.startswith("in:")}


def _qdq(path_out):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = _feeds("llama_dynamo")

    class One(CalibrationDataReader):
        def __init__(self):
            self.left = [feeds]

        def get_next(self):
            return self.left.pop() if self.left else None

    quantize_static(os.path.join(FIXTURES, "llama_dynamo.onnx"), path_out, One(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def _time(fn, repeat):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench_onnx_")
    print(f"{'model':16s} {'kind':9s} {'thr':>3s} {'ladder ms':>10s} {'ORT ms':>8s} {'ORT/ladder':>10s} {'max |diff|':>10s}")
    for name in a.models.split(","):
        path = os.path.join(FIXTURES, name + ".onnx")
        if name == "llama_qdq":
            path = os.path.join(tmp, "llama_qdq.onnx")
            _qdq(path)
        feeds = _feeds(name)
        g, w = lo.load(path, {k: v.shape for k, v in feeds.items()})
        m = ladder.compile(g, "cpu", w)
        args = list(feeds.values())
        for t in threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.inter_op_num_threads = 1
            s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            ours = m(args, threads=t)[g.outputs[0]]
            theirs = s.run(None, feeds)[0]
            tl = _time(lambda: m(args, threads=t), a.repeat)
            to = _time(lambda: s.run(None, feeds), a.repeat)
            diff = float(np.max(np.abs(ours - theirs)))
            print(f"{name:16s} {KIND.get(name, 'fp32'):9s} {t:3d} {tl:10.3f} {to:8.3f} {to / tl:9.2f}x {diff:10.2e}",
                  flush=True)


if __name__ == "__main__":
    main()
