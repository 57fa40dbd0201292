"""Write the llama.cpp parity fixtures of tests/test_parity_llamacpp.py.

For each architecture and weight type of ``tests/parity_models.TYPES``:
  * the float files (F32, F16, BF16) come from ``parity_models.write_float`` (the tests rebuild them, so they
    are not committed); the quantized ones are ``llama-quantize --pure`` of the F32 file, written to
    tests/fixtures/parity/ and committed;
  * llama.cpp runs the file (greedy, ``STEPS`` tokens after ``PROMPT``) and a second file holding the same
    weights dequantized to F32 (gguf's dequantizer). Their difference is llama.cpp's own spread: what its
    quantized dot products (activations rounded to Q8_0 / Q8_K / F16 blocks) change against exact weights.
  * both runs' tokens and first-step logits go to tests/fixtures/parity/llamacpp.json.

llama.cpp itself is not needed by the tests. To rerun this script, build llama.cpp (e.g. the source of the
``llama-cpp-python`` package: ``pip download --no-deps --no-binary :all: llama-cpp-python``, then
``cmake -B BUILD -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON`` and
``cmake --build BUILD --target llama-quantize llama``) and run

    python scripts/make_parity_fixtures.py --src LLAMA_CPP_SOURCE --build BUILD

It compiles scripts/parity_dump.cpp (a small program over llama.h) against that build.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import parity_models as pm  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "parity"


def build_dump(src: Path, build: Path, out: Path) -> Path:
    exe = out / "parity_dump"
    libs = sorted({p.parent for p in build.rglob("*.so")})
    cmd = ["g++", "-O2", "-std=c++17", str(ROOT / "scripts" / "parity_dump.cpp"), "-o", str(exe),
           f"-I{src / 'include'}", f"-I{src / 'ggml' / 'include'}",
           *[f"-L{d}" for d in libs], *[f"-Wl,-rpath,{d}" for d in libs], "-lllama", "-lggml", "-lggml-base"]
    subprocess.run(cmd, check=True)
    return exe


def run_llamacpp(exe: Path, model: Path) -> dict:
    out = subprocess.run([str(exe), str(model), str(pm.STEPS), *map(str, pm.PROMPT)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def dequantized(path: Path, arch: str, out: Path) -> None:
    """The same weights as ``path``, dequantized to F32 by the gguf package."""
    from gguf import GGUFReader, quants

    vals = {}
    for t in GGUFReader(str(path)).tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        vals[t.name] = quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
    pm.write(out, arch, vals, "F32")


def max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="llama.cpp source tree (for llama.h)")
    ap.add_argument("--build", type=Path, required=True, help="its cmake build folder")
    ap.add_argument("--version", default="llama.cpp vendored by llama-cpp-python 0.3.36")
    args = ap.parse_args(argv)
    quantize = next(args.build.rglob("llama-quantize"))
    OUT.mkdir(parents=True, exist_ok=True)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exe = build_dump(args.src, args.build, tmp)
        for arch, types in pm.TYPES.items():
            f32 = tmp / f"{arch}-F32.gguf"
            pm.write_float(f32, arch)
            for qtype in types:
                if qtype in pm.FLOAT_TYPES:
                    model, file = tmp / f"{arch}-{qtype}.gguf", None
                    pm.write_float(model, arch, qtype)
                else:
                    file = f"{arch}-{qtype}.gguf"
                    model = OUT / file
                    # BitNet files keep the embedding in F16, as BitNet's published GGUFs do
                    embd = ["--token-embedding-type", "f16"] if arch == "bitnet" else []
                    subprocess.run([str(quantize), "--pure", *embd, str(f32), str(model), qtype], check=True,
                                   capture_output=True)
                deq = tmp / f"{arch}-{qtype}-deq.gguf"
                dequantized(model, arch, deq)
                got, exact = run_llamacpp(exe, model), run_llamacpp(exe, deq)
                runs[f"{arch}/{qtype}"] = {
                    "arch": arch, "type": qtype, "file": file,
                    "tokens": got["tokens"], "logits": got["logits"],
                    "dequant_tokens": exact["tokens"], "dequant_logits": exact["logits"],
                    "spread": max_rel(got["logits"], exact["logits"]),
                }
                r = runs[f"{arch}/{qtype}"]
                agree = sum(a == b for a, b in zip(r["tokens"], r["dequant_tokens"]))
                print(f"{arch:7s} {qtype:6s} llama.cpp quantized vs dequantized-F32: tokens {agree}/{pm.STEPS}, "
                      f"max rel logit diff {r['spread']:.2e}")
        # llama.cpp's tokenization of some texts by the fixtures' SentencePiece vocabulary
        texts = ["hello the world", "Zoë 42", "  and of  the cat\n", "ing the thing"]
        out = subprocess.run([str(exe), str(OUT / f"llama-{pm.TYPES['llama'][3]}.gguf"), "tokenize", *texts],
                             check=True, capture_output=True, text=True).stdout
        tokenized = dict(zip(texts, json.loads(out)))
    doc = {"llama.cpp": args.version, "tokenize": tokenized, "prompt": pm.PROMPT, "steps": pm.STEPS, "dims": pm.DIMS,
           "settings": "1 thread, f32 KV cache, flash attention off", "runs": runs}
    (OUT / "llamacpp.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
