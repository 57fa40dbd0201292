"""Regenerate tests/fixtures/onnx: tiny random transformers models exported by torch.onnx.export, and the
outputs onnxruntime computes for them.

    pip install torch==2.13.0 transformers onnxruntime onnxscript
    python scripts/make_onnx_fixtures.py [--out tests/fixtures/onnx]

Each fixture is NAME.onnx plus NAME.npz holding the inputs (``in:<name>``) and ORT's outputs
(``out:<name>``). The models are seeded and tiny (hidden 64, 2 layers, vocab 128): they check that an
export imports as written and computes what ORT computes, not what a trained model says.

* ``{llama,gpt2,bert}_dynamo``: the dynamo exporter (``dynamo=True``), input_ids only;
* ``{llama,gpt2,bert}_ts``: the TorchScript exporter (``dynamo=False``) with an attention mask
  (transformers' TorchScript path needs one);
* ``llama_dynquant``: ``onnxruntime.quantization.quantize_dynamic`` of llama_dynamo
  (DynamicQuantizeLinear + MatMulIntegerToFloat);
* ``llama_dynquant_fused``: the same as ORT's optimizer saves it (MatMulIntegerToFloat, fused norms);
* ``llama_nbits``: llama_dynamo with its MatMuls 4-bit (MatMulNBits, block 32, asymmetric);
* ``bert_fused``, ``gpt2_fused``: ORT's transformer optimizer on the TorchScript exports
  (SkipLayerNormalization, FastGelu / BiasGelu, ...);
* ``rotary_ms``: one com.microsoft RotaryEmbedding node (the optimizer fuses rotary only for larger models);
* ``ms_ops``: one node of each other fused op (Simplified/Skip norms with optional outputs, BiasGelu,
  FastGelu, QuickGelu, FusedMatMul, DynamicQuantizeMatMul).
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np

SEQ = 8


def _models():
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return {
        "llama": LlamaForCausalLM(LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=32, tie_word_embeddings=True)),
        "gpt2": GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=32)),
        "bert": BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=128, max_position_embeddings=32)),
    }


def _wrap(m):
    import torch

    class Logits(torch.nn.Module):  # one output, no KV cache: what an exported classifier or LM step is
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            kw = {} if type(self.inner).__name__ == "BertModel" else {"use_cache": False}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw)[0]

    return Logits(m).eval()


def _ort(path, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, feeds)))


def _save(out, name, feeds):
    path = os.path.join(out, name + ".onnx")
    res = _ort(path, feeds)
    np.savez_compressed(os.path.join(out, name + ".npz"), **{f"in:{k}": v for k, v in feeds.items()},
                        **{f"out:{k}": v for k, v in res.items()})
    print(f"{name}: {os.path.getsize(path)} bytes, outputs {[(k, v.shape) for k, v in res.items()]}")


def export_all(out: str) -> None:
    import torch

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 128, (1, SEQ)).astype(np.int64)
    mask = np.array([[1] * (SEQ - 2) + [0, 0]], np.int64)
    for kind, model in _models().items():
        w = _wrap(model)
        for dynamo in (True, False):
            name = f"{kind}_{'dynamo' if dynamo else 'ts'}"
            path = os.path.join(out, name + ".onnx")
            args = (torch.from_numpy(ids),) if dynamo else (torch.from_numpy(ids), torch.from_numpy(mask))
            names = ["input_ids"] + ([] if dynamo else ["attention_mask"])
            torch.onnx.export(w, args, path, dynamo=dynamo, input_names=names, output_names=["out"],
                              opset_version=18 if dynamo else 17, external_data=False)
            feeds = {"input_ids": ids} if dynamo else {"input_ids": ids, "attention_mask": mask}
            _save(out, name, feeds)
    _derived(out, ids, mask)


def _derived(out: str, ids, mask) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnxruntime.transformers.optimizer import optimize_model

    src = os.path.join(out, "llama_dynamo.onnx")
    dq = os.path.join(out, "llama_dynquant.onnx")
    # reduce_range: 7-bit weights, so ORT's u8 x s8 kernels on AVX2 (vpmaddubsw) cannot saturate and ORT's
    # answer is the exact integer result on every CPU
    quantize_dynamic(src, dq, weight_type=QuantType.QInt8, reduce_range=True)
    _save(out, "llama_dynquant", {"input_ids": ids})
    # what ORT runs: its optimizer fuses MatMulInteger + Cast + Mul into com.microsoft.MatMulIntegerToFloat
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = os.path.join(out, "llama_dynquant_fused.onnx")
    ort.InferenceSession(dq, so, providers=["CPUExecutionProvider"])
    _save(out, "llama_dynquant_fused", {"input_ids": ids})

    q = MatMulNBitsQuantizer(onnx.load(src), block_size=32, is_symmetric=False)
    q.process()
    onnx.save(q.model.model, os.path.join(out, "llama_nbits.onnx"))
    _save(out, "llama_nbits", {"input_ids": ids})

    for kind in ("bert", "gpt2"):
        opt = optimize_model(os.path.join(out, f"{kind}_ts.onnx"), model_type=kind, num_heads=4, hidden_size=64,
                             opt_level=1)
        # keep the fused ops a user would see, but not Attention (a different op family)
        opt.save_model_to_file(os.path.join(out, f"{kind}_fused.onnx"))
        _save(out, f"{kind}_fused", {"input_ids": ids, "attention_mask": mask})
    _rotary(out)
    _ms_ops(out)


def _ms_ops(out: str) -> None:
    """One node of each fused op the optimizers write, with their optional outputs, on random data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    d, ms = 32, "com.microsoft"
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["sln"], axis=-1, epsilon=1e-5),
        helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "g", "bias"], ["ssln", "", "", "ssum"],
                         domain=ms, epsilon=1e-6),
        helper.make_node("SkipLayerNormalization", ["x", "skip", "g", "beta", "bias"], ["sln2", "", "", "ssum2"],
                         domain=ms, epsilon=1e-5),
        helper.make_node("BiasGelu", ["x", "bias"], ["bg"], domain=ms),
        helper.make_node("FastGelu", ["x", "bias"], ["fg"], domain=ms),
        helper.make_node("QuickGelu", ["x"], ["qg"], domain=ms, alpha=1.702),
        helper.make_node("FusedMatMul", ["x", "w"], ["fm"], domain=ms, alpha=0.5, transA=0, transB=1),
        helper.make_node("DynamicQuantizeMatMul", ["x", "wq", "ws", "wz", "b8"], ["dqm"], domain=ms),
    ]
    outs = ["sln", "ssln", "ssum", "sln2", "ssum2", "bg", "fg", "qg", "fm", "dqm"]
    g = helper.make_graph(nodes, "ms_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, d]),
                                            helper.make_tensor_value_info("skip", TensorProto.FLOAT, [2, 4, d])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                          [numpy_helper.from_array(v, k) for k, v in {
                              "g": f32(d), "bias": f32(d), "beta": f32(d), "w": f32(8, d),
                              "wq": rng.integers(-60, 60, (d, 8)).astype(np.int8), "ws": np.float32([0.03]),
                              "wz": np.zeros(1, np.int8), "b8": f32(8)}.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    onnx.save(m, os.path.join(out, "ms_ops.onnx"))
    _save(out, "ms_ops", {"x": f32(2, 4, d), "skip": f32(2, 4, d)})


def _rotary(out: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    b, s, n, h, max_len = 1, SEQ, 4, 16, 32
    inv = 10000.0 ** (-np.arange(0, h, 2) / h)
    ang = np.arange(max_len)[:, None] * inv[None, :]
    nodes = [helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft",
                              num_heads=n, interleaved=0),
             helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["yi"], domain="com.microsoft",
                              num_heads=n, interleaved=1)]
    g = helper.make_graph(nodes, "rotary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, s, n * h]),
                                            helper.make_tensor_value_info("pos", TensorProto.INT64, [b, s])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("yi", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.cos(ang).astype(np.float32), "cos"),
                           numpy_helper.from_array(np.sin(ang).astype(np.float32), "sin")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(m, os.path.join(out, "rotary_ms.onnx"))
    _save(out, "rotary_ms", {"x": rng.standard_normal((b, s, n * h)).astype(np.float32),
                             "pos": (np.arange(s)[None, :] + 3).astype(np.int64)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx"))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    warnings.filterwarnings("ignore")
    export_all(out)


if __name__ == "__main__":
    main()
