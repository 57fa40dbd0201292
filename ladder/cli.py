"""The ``ladder`` command line.

Every failure a user can cause prints one paragraph (with file:line:col where there is a file) and exits
non-zero: 1 for an error in the input, 2 for a malformed command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import LadderError

TARGETS = ("ref", "cpu", "cpu:native", "cpu:generic", "cpu:avx2", "cpu:avx512")


def _load(path: str, shapes=None):
    from .frontends import load

    return load(path, shapes)[0]


def _parse_shapes(specs) -> dict[str, tuple[int, ...]]:
    out = {}
    for spec in specs or ():
        name, eq, dims = spec.partition("=")
        try:
            out[name.lstrip("%")] = tuple(int(d) for d in dims.lower().split("x")) if eq and dims else None
        except ValueError:
            out[name] = None
        if not name or out[name.lstrip("%")] is None:
            raise LadderError(f"--shape expects NAME=DIMS like x=1x2560, got '{spec}'")
    return out


def cmd_import(args) -> int:
    from . import weights as weights_mod
    from .frontends import load

    g, w = load(args.file, _parse_shapes(args.shape))
    Path(args.output).write_text(str(g))
    msg = f"wrote {args.output} (@{g.name}: {len(g.inputs)} inputs, {len(g)} ops)"
    if args.weights_out:
        weights_mod.save(args.weights_out, g, w)
        msg += f" and {len(w)} weights to {args.weights_out}"
    print(msg)
    return 0


def cmd_fmt(args) -> int:
    g = _load(args.file)
    text = str(g)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_check(args) -> int:
    failed = 0
    for f in args.files:
        try:
            g = _load(f)
            print(f"{f}: ok (@{g.name}: {len(g.inputs)} inputs, {len(g)} ops, {len(g.outputs)} outputs)")
        except LadderError as e:
            print(e, file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _pipeline(args, graph):
    from .passes import DumpToDir, PassManager, PrintIRAfterAll, TimePasses

    instruments = []
    if getattr(args, "print_ir_after_all", False):
        instruments.append(PrintIRAfterAll(sys.stdout))
    timer = TimePasses(sys.stderr) if getattr(args, "time_passes", False) else None
    if timer:
        instruments.append(timer)
    if getattr(args, "dump_dir", None):
        instruments.append(DumpToDir(args.dump_dir))
    return PassManager(args.pipeline or "", instruments).run(graph)


def cmd_opt(args) -> int:
    g = _pipeline(args, _load(args.file))
    if args.output:
        Path(args.output).write_text(str(g))
    elif not (args.print_ir_after_all and args.pipeline.strip()):
        sys.stdout.write(str(g))
    return 0


def _parse_inputs(specs: Sequence[str]) -> dict[str, np.ndarray]:
    out = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not name or not path:
            raise LadderError(f"--input expects NAME=PATH.npy, got '{spec}'")
        try:
            out[name.lstrip("%")] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise LadderError(f"--input {name}: no such file {path}") from None
        except (OSError, ValueError) as e:
            raise LadderError(f"--input {name}: {path} is not a .npy array ({e})") from None
    return out


def _random_inputs(graph, given: dict, seed: int) -> dict:
    from .weights import random_tensor

    rng = np.random.default_rng(seed)
    out = dict(given)
    for v in graph.inputs:
        if v.name in out:
            continue
        t = v.type
        if t.dtype.is_float and t.dtype.bits >= 16:
            out[v.name] = rng.standard_normal(t.shape).astype(np.float32)
        elif t.dtype.kind in ("int", "uint") and t.dtype.bits >= 8:  # ids, positions: small and >= 0
            out[v.name] = rng.integers(0, 8, t.shape).astype(t.dtype.np_dtype)
        else:
            out[v.name] = random_tensor(rng, t)
    return out


def cmd_run(args) -> int:
    from . import weights as weights_mod
    from .compile import compile as compile_graph
    from .frontends import load

    target = args.target
    if args.cpu:
        if not target.startswith("cpu"):
            raise LadderError(f"--cpu {args.cpu} goes with --target cpu, not --target {target}")
        target = f"cpu:{args.cpu}"
    if target not in TARGETS and not target.startswith("asic:"):
        raise LadderError(f"unknown target '{target}'; available: {', '.join(TARGETS)}, asic:CONFIG")
    g, w = load(args.file, _parse_shapes(args.shape))
    if args.pipeline:
        g = _pipeline(args, g)
    if args.weights:
        w = weights_mod.load(args.weights)
    elif args.random_weights is not None:
        w = weights_mod.random(g, args.random_weights)
    inputs = _parse_inputs(args.input)
    if args.random_inputs is not None:
        inputs = _random_inputs(g, inputs, args.random_inputs)
    module = compile_graph(g, target, w, pipeline="" if args.pipeline else None, threads=args.threads)
    results = module(inputs)
    if args.output:
        write_npz(args.output, results)
        print(f"wrote {len(results)} output(s) to {args.output}: {', '.join(results)}")
    else:
        for name, arr in results.items():
            flat = arr.reshape(-1).astype(np.float64)
            head = ", ".join(f"{v:.6g}" for v in flat[:6]) + (", ..." if flat.size > 6 else "")
            stats = f"min {flat.min():.6g} max {flat.max():.6g} mean {flat.mean():.6g}" if flat.size else "empty"
            print(f"%{name} : {g.type_of(name)}  [{head}]  {stats}")
    return 0


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An .npz at exactly ``path`` (np.savez would append .npz, and its keyword form cannot take every name)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


def cmd_compile(args) -> int:
    from . import weights as weights_mod
    from .compile import compile as compile_graph
    from .frontends import load

    target = f"cpu:{args.cpu}" if args.cpu else args.target
    if not target.startswith(("cpu", "asic:")):
        raise LadderError(f"ladder compile writes native code for a cpu target or a program for an asic:CONFIG "
                          f"target, not '{target}'")
    emit = args.emit or ("isa" if target.startswith("asic:") else "so")
    if (emit == "isa") != target.startswith("asic:"):
        raise LadderError(f"--emit {emit} does not go with --target {target} (asic targets emit isa; cpu targets "
                          f"so, llvm, asm or obj)")
    g, w = load(args.file, _parse_shapes(args.shape))
    if args.weights:
        w = weights_mod.load(args.weights)
    elif args.random_weights is not None:
        w = weights_mod.random(g, args.random_weights)
    module = compile_graph(g, target, w, cache=False, jit=False)
    files = module.write(args.output, emit)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def cmd_demo(args) -> int:
    from .demo import main

    return main(size=args.size, seed=args.seed, tokens=args.tokens)


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise LadderError(f"--prompt-ids expects comma-separated token ids like 1,2,3, got '{text}'") from None


def cmd_generate(args) -> int:
    from .generate import ModuleRunner, check, generate, load_model, report

    if args.cpu and not args.target.startswith("cpu"):
        raise LadderError(f"--cpu {args.cpu} goes with --target cpu, not --target {args.target}")
    target = f"cpu:{args.cpu}" if args.cpu else args.target
    if target not in TARGETS and not target.startswith("asic:"):
        raise LadderError(f"unknown target '{target}'; available: {', '.join(TARGETS)}, asic:CONFIG")
    prompt = _parse_ids(args.prompt_ids)
    model = load_model(args.model, prompt_len=max(len(prompt), 1), weights=args.weights,
                       random_weights=args.random_weights, prefill_path=args.prefill, context=args.context)
    check(model.prefill, model.decode, prompt, args.max_new)  # before compiling
    runner = ModuleRunner(target, model.weights, args.threads)
    seconds = runner.prepare(model.prefill, model.decode)  # compile before timing
    print(f"@{model.decode.name} on {target}: compiled in {seconds:.2f} s")
    report(generate(model.prefill, model.decode, prompt, args.max_new, runner), sys.stdout)
    return 0


def cmd_tune(args) -> int:
    from .tune import cache_path, format_choices, problems_of, tune

    target = f"cpu:{args.cpu}" if args.cpu else args.target
    if not target.startswith("cpu"):
        raise LadderError(f"ladder tune measures cpu kernels; --target must be a cpu target, got '{target}'")
    problems = problems_of(_load(args.file), target, args.tables)
    if not problems:
        print(f"{args.file}: no low-bit matmul the lut pass could rewrite; nothing to tune")
        return 0
    choices = tune(problems, target, args.threads, budget=args.budget, progress=True)
    print(format_choices(choices))
    print(f"tuning cache: {cache_path()}")
    return 0


def _sim_workload(args):
    from .backends.asic.sweep import at_point, load_workload

    return load_workload(args.file, args.context, args.layers), at_point(args.hw, args.point)


def cmd_sim(args) -> int:
    from .backends.asic.sweep import run

    if args.tokens <= 0:
        raise LadderError(f"--tokens must be positive, got {args.tokens}")
    workload, cfg = _sim_workload(args)
    report = run(workload, cfg, runs=args.tokens)
    if args.json:
        Path(args.json).write_text(report.to_json())
    if args.csv:
        Path(args.csv).write_text(report.to_csv())
    print(report.to_text())
    return 0


def cmd_sweep(args) -> int:
    from .backends.asic.sweep import parse_axes, plot, sweep, write_csv

    axes = parse_axes(args.set)
    workload, cfg = _sim_workload(args)
    rows = sweep(workload, cfg, axes, progress=sys.stderr.isatty())
    write_csv(rows, args.output)
    keys = list(axes) + ["tokens_per_s", "energy_per_token_j", "power_w", "error"]
    for r in rows:
        print("  ".join(f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}" for k in keys
                        if r.get(k) not in (None, "")))
    msg = f"wrote {len(rows)} point(s) to {args.output}"
    if args.plot:
        plot(rows, axes, args.plot)
        msg += f" and a plot to {args.plot}"
    print(msg)
    return 0


def cmd_ops(args) -> int:
    from .ops import OPS

    for name, opdef in sorted(OPS.items()):
        operands = ", ".join(opdef.operands)
        attrs = ", ".join(f"{k}" + ("" if s.required else f"={s.default!r}") for k, s in opdef.attrs.items())
        doc = (type(opdef).__doc__ or "").strip().splitlines()
        print(f"{name}({operands}){' {' + attrs + '}' if attrs else ''}" + (f"  -- {doc[0]}" if doc else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .models import SIZES

    p = argparse.ArgumentParser(prog="ladder", description="A compiler for low-bit neural networks.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("fmt", help="parse a .lir file and print it in canonical form")
    s.add_argument("file")
    s.add_argument("-o", "--output", help="write here instead of stdout")
    s.set_defaults(fn=cmd_fmt)

    s = sub.add_parser("check", help="parse and verify .lir files; exit 1 with located errors")
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_check)

    def pipeline_opts(s, required):
        s.add_argument("-p", "--pipeline", required=required, help="passes, e.g. 'canonicalize'")
        s.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
        s.add_argument("--time-passes", action="store_true", help="print a per-pass timing table (stderr)")
        s.add_argument("--dump-dir", help="write the IR before and after every pass into this folder")

    s = sub.add_parser("opt", help="run a pass pipeline over a .lir file")
    s.add_argument("file")
    pipeline_opts(s, required=True)
    s.add_argument("-o", "--output", help="write the result here instead of stdout")
    s.set_defaults(fn=cmd_opt)

    s = sub.add_parser("run", help="run a .lir graph on inputs and weights")
    s.add_argument("file")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--weights", help="a safetensors file holding every param by name")
    w.add_argument("--random-weights", type=int, metavar="SEED", help="seeded random weights")
    s.add_argument("--input", action="append", default=[], metavar="NAME=PATH.npy", help="an input (repeatable)")
    s.add_argument("--random-inputs", type=int, metavar="SEED", help="seeded random values for inputs not given")
    s.add_argument("--output", help="write the outputs to this .npz, keyed by value name")
    s.add_argument("--target", default="ref", help=f"where to run: {', '.join(TARGETS)} or asic:CONFIG (its "
                                                   f"functional simulator) (default ref)")
    s.add_argument("--cpu", choices=["native", "generic", "avx2", "avx512"], help="force a cpu level (--target cpu)")
    s.add_argument("--threads", type=int, help="threads for the cpu target (default: the usable cores)")
    s.add_argument("--shape", action="append", metavar="NAME=DIMS", help="fix a symbolic input shape, e.g. x=1x2560")
    pipeline_opts(s, required=False)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("import", help="convert an ONNX or GGUF model to .lir (+ its weights as safetensors)")
    s.add_argument("file")
    s.add_argument("-o", "--output", required=True, help="the .lir to write")
    s.add_argument("--weights-out", help="write the model's weights to this safetensors file")
    s.add_argument("--shape", action="append", metavar="NAME=DIMS", help="fix a symbolic input shape, e.g. x=1x2560")
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("compile", help="compile ahead of time: a shared library + C header (+ weights), or IR")
    s.add_argument("file")
    s.add_argument("-o", "--output", required=True, help="the file to write (model.so, model.ll, ...)")
    s.add_argument("--target", default="cpu",
                   help="cpu, cpu:native, cpu:generic, cpu:avx2, cpu:avx512 or asic:CONFIG (e.g. asic:lut-tc)")
    s.add_argument("--cpu", choices=["native", "generic", "avx2", "avx512"], help="force a cpu level")
    s.add_argument("--emit", choices=["so", "llvm", "asm", "obj", "isa"], default=None,
                   help="so (default for cpu), llvm, asm, obj; isa: the program's assembly (asic targets)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--weights", help="a safetensors file holding every param by name")
    w.add_argument("--random-weights", type=int, metavar="SEED", help="seeded random weights")
    s.add_argument("--shape", action="append", metavar="NAME=DIMS", help="fix a symbolic input shape")
    s.set_defaults(fn=cmd_compile)

    s = sub.add_parser("demo", help="a BitNet-shaped model end to end on built-in seeded weights")
    s.add_argument("--size", choices=list(SIZES), default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tokens", type=int, default=8, help="tokens to generate")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("generate", help="greedy generation: prefill a prompt, then decode with the KV cache")
    s.add_argument("model", help="a .gguf file, or a .lir step graph (see ladder.generate for the convention)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--weights", help="the .lir model's params: a safetensors file")
    w.add_argument("--random-weights", type=int, metavar="SEED", help="seeded random params for a .lir model")
    s.add_argument("--prompt-ids", required=True, metavar="IDS", help="the prompt's token ids, e.g. 1,2,3")
    s.add_argument("--max-new", type=int, default=32, help="tokens to generate (default 32)")
    s.add_argument("--target", default="cpu", help=f"where to run: {', '.join(TARGETS)} or asic:CONFIG (its "
                                                   f"functional simulator) (default cpu)")
    s.add_argument("--cpu", choices=["native", "generic", "avx2", "avx512"], help="force a cpu level")
    s.add_argument("--threads", type=int, help="threads for the cpu target (default: the usable cores)")
    s.add_argument("--prefill", metavar="FILE.lir", help="a step graph with more tokens per step for the prompt")
    s.add_argument("--context", type=int, help="cache capacity of a .gguf model (default: its context length)")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("ops", help="list the ops with their operands and attributes")
    s.set_defaults(fn=cmd_ops)

    def sim_opts(s):
        s.add_argument("file", help="a .lir step graph, or a built-in model: bitnet:2b, bitnet:3b, opt:6.7b, "
                                    "llama:3.1-8b, ... (one decode step)")
        s.add_argument("--hw", required=True, help="a hardware config: a shipped name (lut-tc, slim-llama, "
                                                   "pim-llm, taalas-hc1) or a .toml path")
        s.add_argument("--point", help="an operating point of the config (e.g. slim-llama's low-power)")
        s.add_argument("--context", type=int, help="KV-cache size of a built-in model (default: the model's)")
        s.add_argument("--layers", type=int, help="layers of a built-in model (default: the model's)")

    s = sub.add_parser("sim", help="cost-simulate a graph on an ASIC hardware config: cycles, energy, tokens/s")
    sim_opts(s)
    s.add_argument("--tokens", type=int, default=1, help="decode steps to total (default 1)")
    s.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    s.add_argument("--csv", metavar="OUT", help="also write the report as CSV (scope,name,metric,value)")
    s.set_defaults(fn=cmd_sim)

    s = sub.add_parser("sweep", help="cost-simulate over a grid of hardware config values; CSV (+ plot)")
    sim_opts(s)
    s.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values, e.g. sram_kb=256,512,1024 (repeatable)")
    s.add_argument("-o", "--output", default="sweep.csv", help="the CSV to write (default sweep.csv)")
    s.add_argument("--plot", metavar="OUT.png", help="also plot tokens/s and energy per token (needs matplotlib)")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("tune", help="time decode vs table lookup for a graph's low-bit matmuls; keep the choices")
    s.add_argument("file")
    s.add_argument("--target", default="cpu", help="a cpu target this machine runs (default cpu)")
    s.add_argument("--cpu", choices=["native", "generic", "avx2", "avx512"], help="force a cpu level")
    s.add_argument("--threads", type=int, help="threads to tune for (default: the usable cores)")
    s.add_argument("--budget", type=float, default=0.25, help="seconds of timing per kernel variant (default 0.25)")
    s.add_argument("--tables", choices=["f32", "i8", "i8-fast"], default="f32",
                   help="tables for f32 activations, as the lut pass builds them: f32 (default pipeline), i8 "
                        "(lut{quantize=true}) or i8-fast (+ fast_aggregation)")
    s.set_defaults(fn=cmd_tune)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except LadderError as e:
        print(e, file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:  # files that cannot be written, bad option values
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
