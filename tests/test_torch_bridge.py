"""ladder.torch: the quantized Linear (against torch's F.linear on its dequantized weight), its custom op under
torch.compile, the "ladder" compile backend (against eager torch), the errors, and a transformers Llama whose
linears ``quantize`` swapped, generating the same greedy tokens as ladder's own decoder graph with the same codes.

Needs torch (and transformers for the model tests); skipped without them. Speed is benchmarks/bench_torch.py's.
"""

from __future__ import annotations

import dataclasses
import operator
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import ladder  # noqa: E402
import ladder.torch as lt  # noqa: E402
from ladder.errors import LadderError  # noqa: E402
from ladder.generate import generate  # noqa: E402
from ladder.models import LLAMA_HF, BitNetConfig, decoder  # noqa: E402
from ladder.torch.linear import row_chunks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HF_LLAMA = ROOT / "tests" / "fixtures" / "parity" / "hf-llama"
# float32 both sides; only the order of summation differs (ladder's kernels vs torch's BLAS)
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # modules of one class compiled again and again would reach dynamo's recompile limit
    yield


def reference(q: lt.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = q.bias_tensor()
    return F.linear(x, q.dequantized_weight().to(x.dtype), None if bias is None else bias.to(x.dtype))


def compile_with_ladder(model, *inputs, **options):
    """(outputs, the rewritten graph module) of ``model`` compiled with the ladder backend, under no_grad."""
    gms = []

    def keep(gm, example_inputs):
        fn = lt.backend(gm, example_inputs)
        gms.append(gm)
        return fn

    with torch.no_grad():
        out = torch.compile(model, backend=keep, **options)(*inputs)
    assert len(gms) == 1
    return out, gms[0]


# -- the import boundary -------------------------------------------------------------------------------------------


def test_import_ladder_does_not_import_torch_and_the_bridge_needs_it():
    code = ("import sys, ladder; assert 'torch' not in sys.modules\n"
            "sys.modules['torch'] = None\n"  # what an environment without torch looks like to an import
            "try:\n    import ladder.torch\nexcept ladder.LadderError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ladder.torch needs PyTorch: pip install 'ladder[torch]'" in out.stdout


# -- Linear ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, group, bias", [
    ("ternary", None, True), ("ternary", 16, False), ("i4", None, False), ("i4", 0, True), ("u4", 32, True),
    ("i2", 16, True), ("u2", -1, False), ("i8", None, True)])
def test_linear_matches_eager_on_its_dequantized_weight(dtype, group, bias):
    torch.manual_seed(0)
    q = lt.Linear.from_linear(nn.Linear(64, 48, bias=bias), dtype=dtype, group=group)
    assert q.quantized.dtype == dtype and (q.bias_tensor() is not None) == bias
    for shape in [(1, 64), (5, 64), (2, 2, 64)]:  # M = 1, M = 5 (kernels of 4 + 1 rows), a 3-d input
        x = torch.randn(*shape)
        y = q(x)
        assert y.shape == (*shape[:-1], 48) and y.dtype == torch.float32
        torch.testing.assert_close(y, reference(q, x), **TOL)


def test_linear_keeps_the_input_dtype_and_takes_empty_inputs():
    torch.manual_seed(1)
    q = lt.Linear.from_linear(nn.Linear(32, 8), dtype="i4")
    x = torch.randn(3, 32, dtype=torch.float64)
    y = q(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, reference(q, x), rtol=1e-5, atol=1e-5)
    assert q(torch.randn(0, 32)).shape == (0, 8)
    assert q(torch.randn(2, 32).t().contiguous().t()).shape == (2, 8)  # a strided view of the same values


def test_rows_run_in_power_of_two_chunks():
    assert row_chunks(1) == [1] and row_chunks(7) == [4, 2, 1] and row_chunks(32) == [32]
    assert row_chunks(600, 256) == [256, 256, 64, 16, 8]
    q = lt.Linear.from_linear(nn.Linear(16, 8), dtype="ternary")
    torch.manual_seed(2)
    x = torch.randn(7, 16)
    torch.testing.assert_close(q(x), reference(q, x), **TOL)
    assert sorted(q.kernel.modules) == [1, 2, 4]


@pytest.mark.parametrize("dtype, bound", [("i8", 0.01), ("i4", 0.1), ("ternary", 0.5)])
def test_quantization_error_is_that_of_the_type(dtype, bound):
    torch.manual_seed(3)
    lin = nn.Linear(128, 64)
    w = lt.Linear.from_linear(lin, dtype=dtype).dequantized_weight()
    assert float((w - lin.weight.detach()).norm() / lin.weight.detach().norm()) < bound


def test_the_custom_op_is_registered_properly():
    q = lt.Linear.from_linear(nn.Linear(32, 16), dtype="i4")
    result = torch.library.opcheck(lt.linear_op, (torch.randn(3, 32), q.kernel.key, 16))
    assert set(result.values()) == {"SUCCESS"}, result


class TwoLinears(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.up = lt.Linear.from_linear(nn.Linear(64, 128), dtype="i4")
        self.down = lt.Linear.from_linear(nn.Linear(128, 64, bias=False), dtype="ternary")

    def forward(self, x):
        return self.down(F.silu(self.up(x))) + x


@pytest.fixture(scope="module")
def two_linears():
    return TwoLinears().eval()


def test_compile_fullgraph_traces_linear_without_graph_breaks(two_linears):
    x = torch.randn(2, 5, 64)
    eager = two_linears(x)
    explained = torch._dynamo.explain(two_linears)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    y = torch.compile(two_linears, backend=counting, fullgraph=True)(x)
    assert len(graphs) == 1
    calls = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.ladder.linear.default) == 2
    torch.testing.assert_close(y, eager, rtol=0, atol=0)
    torch._dynamo.reset()
    # through AOTAutograd too (fake tensors and functionalization of the op)
    torch.testing.assert_close(torch.compile(two_linears, backend="aot_eager", fullgraph=True)(x), eager, **TOL)


def test_the_ladder_backend_keeps_the_custom_op_and_lowers_around_it(two_linears):
    x = torch.randn(3, 64)
    y, gm = compile_with_ladder(two_linears, x, fullgraph=True)
    torch.testing.assert_close(y, two_linears(x), **TOL)
    assert [r.rules for r in lt.regions(gm)] == [["silu"], ["add"]]  # the ops between the two linears
    assert [n.target for n in gm.graph.nodes].count(torch.ops.ladder.linear.default) == 2


# -- the compile backend ----------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.norm, self.up, self.down = nn.LayerNorm(32), nn.Linear(32, 96), nn.Linear(96, 32)

    def forward(self, x):
        return x + self.down(F.gelu(self.up(self.norm(x))))


def test_backend_lowers_a_whole_mlp():
    m = MLP().eval()
    x = torch.randn(4, 32)
    out, gm = compile_with_ladder(m, x, fullgraph=True)
    torch.testing.assert_close(out, m(x), **TOL)
    (region,) = lt.regions(gm)
    assert region.rules == ["layer_norm", "linear", "gelu", "linear", "add"]
    left = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    assert {n.target for n in left} == {operator.getitem}  # nothing left for torch to run


class AttentionLike(nn.Module):
    """Attention, then top-k (no ladder op) and integer indexing: the backend must cut around them."""

    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        torch.manual_seed(6)
        self.heads, self.norm = heads, nn.RMSNorm(d, eps=1e-5)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, s, d = x.shape
        h = self.norm(x)

        def split(t):
            return t.view(b, s, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        y = x + self.o((att @ v).transpose(1, 2).reshape(b, s, d))
        top = torch.topk(y, 4, dim=-1)
        picked = (top.indices % 3).float()  # integer arithmetic: torch's
        return y, torch.sigmoid(top.values).mean(-1) * 2 + picked.sum(-1)


def test_backend_hands_unsupported_ops_back_to_torch():
    m = AttentionLike().eval()
    x = torch.randn(2, 5, 32)
    out, gm = compile_with_ladder(m, x, fullgraph=True)
    for got, want in zip(out, m(x)):
        torch.testing.assert_close(got, want, **TOL)
    first, *rest = lt.regions(gm)
    assert {"rms_norm", "linear", "softmax", "matmul", "transpose", "reshape"} <= set(first.rules)
    assert any({"sigmoid", "mean"} <= set(r.rules) for r in rest)
    torch_ops = {n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method")}
    assert torch.topk in torch_ops and operator.mod in torch_ops


def test_backend_is_inference_only_and_static_shape_only():
    m = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8)).eval()
    seen = []

    def keep(gm, example_inputs):
        fn = lt.backend(gm, example_inputs)
        seen.append(len(lt.regions(gm)))
        return fn

    c = torch.compile(m, backend=keep)
    x = torch.randn(3, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = c(x)  # gradients wanted: all torch, and a warning says why
    assert seen == [0] and y.requires_grad
    assert any("inference only" in str(w.message) for w in caught)
    with torch.no_grad():
        torch.testing.assert_close(c(x), m(x), **TOL)
        assert seen == [0, 1]
        x5 = torch.randn(5, 16)  # a new size: dynamo makes it symbolic; ladder leaves such graphs to torch
        torch.testing.assert_close(c(x5), m(x5), **TOL)
        assert seen == [0, 1, 0]
    torch._dynamo.reset()
    c = torch.compile(m, backend="ladder", dynamic=False)  # static shapes: one ladder graph per size
    with torch.inference_mode():
        x5 = torch.randn(5, 16)
        torch.testing.assert_close(c(x5), m(x5), **TOL)


def every_rule(x, y, w, v):
    """A call of every rule, on x, y [2, 3, 8], w [8, 8], v [8]."""
    h = F.layer_norm(x, (8,), v, v) + torch.rms_norm(y, [8], v, 1e-6)
    h = F.linear(h, w, v) - y * 0.5
    h = torch.tanh(h) + F.silu(h) + F.relu(h) / (torch.sigmoid(h) + 1) + torch.exp(-h)
    h = F.gelu(h) + F.gelu(h, approximate="tanh") + torch.erf(h) + torch.sqrt(h * h + 1) + torch.rsqrt(h * h + 1)
    a = torch.softmax(h @ h.transpose(1, 2), dim=-1) + h.pow(2).mean(-1, keepdim=True)
    s = h.sum(-1, keepdim=True) + h.amax(-1, keepdim=True)
    flat = torch.cat([a.permute(0, 2, 1).contiguous(), s.float().to(torch.float32)], dim=-1).reshape(6, 4)
    return torch.mm(flat.t(), flat.unsqueeze(0).squeeze(0))


def test_every_rule_lowers_into_one_region_and_matches_eager():
    torch.manual_seed(7)
    args = (torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(8, 8) / 3, torch.randn(8))
    out, gm = compile_with_ladder(every_rule, *args, fullgraph=True)
    torch.testing.assert_close(out, every_rule(*args), rtol=1e-4, atol=1e-4)
    (region,) = lt.regions(gm)
    assert set(region.rules) == {r.name for r in lt.RULES}


def test_a_region_ladder_cannot_build_stays_torch(monkeypatch):
    def broken(c):
        raise LadderError("no such kernel")

    rule = lt.fx_backend._BY_TARGET[torch.tanh]
    monkeypatch.setitem(lt.fx_backend._BY_TARGET, torch.tanh, dataclasses.replace(rule, emit=broken))
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="run of 2 nodes from %tanh stays torch: .*no such kernel"):
        out, gm = compile_with_ladder(lambda t: torch.tanh(t) + 1, x, fullgraph=True)
    torch.testing.assert_close(out, torch.tanh(x) + 1)
    assert lt.regions(gm) == []


def test_rules_reject_what_ladder_does_not_compute():
    def f(x, y):
        return (torch.add(x, y, alpha=2), torch.div(x, y, rounding_mode="floor"), F.relu(x.clone(), inplace=True),
                x.to(torch.float64).float(), torch.softmax(x, -1, dtype=torch.float64).float(), x.mean(), x + y)

    x, y = torch.randn(3, 4), torch.rand(3, 4) + 1
    out, gm = compile_with_ladder(f, x, y, fullgraph=True)
    for got, want in zip(out, f(x, y)):
        torch.testing.assert_close(got, want, **TOL)
    assert [r.rules for r in lt.regions(gm)] == [["add"]]  # only the plain x + y


# -- errors ------------------------------------------------------------------------------------------------


def test_errors_say_what_is_wrong():
    lin = nn.Linear(48, 8)
    with pytest.raises(LadderError, match="dtype 'int3' has no quantization recipe; known: i8, u8, i4"):
        lt.Linear.from_linear(lin, dtype="int3")
    with pytest.raises(LadderError, match="group 32 must be -1 .* or a size dividing in_features 48"):
        lt.Linear.from_linear(lin, dtype="i4", group=32)
    with pytest.raises(LadderError, match="expects an nn.Linear, got Conv1d"):
        lt.Linear.from_linear(nn.Conv1d(4, 4, 1))
    q = lt.Linear.from_linear(lin, dtype="i4", group=16)
    with pytest.raises(LadderError, match=r"expected an input \[\.\.\., 48\], got shape \[2, 32\]"):
        q(torch.randn(2, 32))
    with pytest.raises(LadderError, match="expected a float tensor on the CPU, got torch.int64"):
        q(torch.ones(2, 48, dtype=torch.long))
    with pytest.raises(LadderError, match="maps 48 features to 8; got an input"):
        lt.linear_op(torch.randn(2, 40), q.kernel.key, 8)
    with pytest.raises(LadderError, match="no kernel under key -1"):
        lt.linear_op(torch.randn(2, 48), -1, 8)
    x = torch.randn(2, 48, requires_grad=True)
    with pytest.raises(LadderError, match="inference only"):
        q(x).sum().backward()
    model = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 8))
    with pytest.raises(LadderError, match="dividing in_features 48"):
        lt.quantize(model, dtype="i4", group=32)
    assert all(type(m) is nn.Linear for m in model)  # nothing swapped


# -- a transformers model -----------------------------------------------------------------------------------------

PROMPT = [1, 200, 45, 191, 17, 62, 9, 33]  # 8 tokens: kernels of 8 rows for the prompt, of 1 for each step
STEPS = 16


class QuantizedLlamaSource:
    """ladder.models.WeightSource over a transformers Llama whose projections are ladder Linears: float
    embedding, norms and head; each projection as ladder's ``dequant`` of the Linear's own codes and scales."""

    PROJ = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
            "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    NORM = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}

    def __init__(self, model):
        self.model, self.weights = model, {}

    def _param(self, b, name: str, array: np.ndarray, dtype: str = "f32"):
        self.weights[name] = array
        return b.param(name, f"{dtype}{list(array.shape)}")

    def embed(self, b, tokens):
        return b.gather(self._param(b, "embed", self.model.model.embed_tokens.weight.detach().numpy()), tokens)

    def norm(self, b, name, size):
        if name == "final_norm":
            return self._param(b, name, self.model.model.norm.weight.detach().numpy())
        _, i, which = name.split(".")
        layer = self.model.model.layers[int(i)]
        return self._param(b, name, layer.get_submodule(self.NORM[which]).weight.detach().numpy())

    def project(self, b, x, act_scale, name, out_features, in_features):
        _, i, proj = name.split(".")
        lin = self.model.model.layers[int(i)].get_submodule(self.PROJ[proj])
        q = lin.quantized
        assert q.codes.shape == (out_features, in_features)
        ops = [self._param(b, f"{name}.codes", q.codes, q.dtype), self._param(b, f"{name}.scale", q.scale)]
        if q.zero is not None:
            ops.append(self._param(b, f"{name}.zero", q.zero))
        return b.matmul(x, b.dequant(*ops, group=q.group, zero_mode=q.zero_mode), transpose_b=True)

    def head(self, b, x):
        w = self._param(b, "lm_head", self.model.lm_head.weight.detach().numpy())
        return b.matmul(x, w, transpose_b=True, name="logits")


@pytest.fixture(scope="module", params=["ternary", "i4"])
def quantized_llama(request):
    """The committed tiny seeded Llama folder (tests/test_parity_hf.py's; its head leans to a successor of each
    token, which keeps greedy choices clear of near-ties), its linears swapped for ladder ones."""
    transformers = pytest.importorskip("transformers")
    model = transformers.LlamaForCausalLM.from_pretrained(HF_LLAMA, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # generate all STEPS tokens, as ladder's loop does
    with torch.no_grad():
        float_logits = model(torch.tensor([PROMPT])).logits[0, -1].numpy()
    return request.param, lt.quantize(model, dtype=request.param), float_logits


def test_quantize_swaps_the_projections_and_keeps_the_head(quantized_llama):
    dtype, model, _ = quantized_llama
    swapped = [n for n, m in model.named_modules() if isinstance(m, lt.Linear)]
    assert len(swapped) == 2 * 7 and all(model.get_submodule(n).quantized.dtype == dtype for n in swapped)
    assert type(model.lm_head) is nn.Linear


def test_quantized_transformers_model_generates_the_reference_graphs_tokens(quantized_llama):
    """transformers' Llama (its attention, RoPE and norms in torch) with ladder's compiled kernels for the
    projections, against ladder's own decoder graph run by the reference interpreter on the same codes."""
    dtype, model, float_logits = quantized_llama
    with torch.no_grad():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=STEPS, do_sample=False)
        first = model(torch.tensor([PROMPT])).logits[0, -1].numpy()
    tokens = out[0, len(PROMPT):].tolist()

    c = model.config
    cfg = BitNetConfig(vocab=c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers,
                       heads=c.num_attention_heads, kv_heads=c.num_key_value_heads, ffn=c.intermediate_size,
                       context=len(PROMPT) + STEPS, rope_theta=c.rope_parameters["rope_theta"], eps=c.rms_norm_eps)
    src = QuantizedLlamaSource(model)
    prefill = decoder(LLAMA_HF, cfg, src, len(PROMPT), "prefill", last_logits=True)
    step = decoder(LLAMA_HF, cfg, src, 1, "decode")
    assert [op.kind for op in step.ops()].count("dequant") == 2 * 7
    gen = generate(prefill, step, PROMPT, STEPS, lambda g, inputs: ladder.run(g, inputs, src.weights))
    assert tokens == gen.ids
    np.testing.assert_allclose(first, gen.first_logits, rtol=1e-4, atol=1e-4)
    # and the quantization did something: the float model's logits are far from both
    assert np.abs(first - float_logits).max() > 100 * np.abs(first - gen.first_logits).max()
