"""The ``ladder`` command line.

Every failure a user can cause prints one paragraph (with file:line:col where there is a file) and exits
non-zero: 1 for an error in the input, 2 for a malformed command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import LadderError
from .progress import Task, seconds_text

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
    weights_out = args.weights_out
    if weights_out is None and w:  # the .lir alone cannot run: keep the weights beside it, and say where
        weights_out = str(Path(args.output).with_suffix(".safetensors"))
    Path(args.output).write_text(str(g))
    msg = f"wrote {args.output} (@{g.name}: {len(g.inputs)} inputs, {len(g)} ops)"
    if weights_out:
        weights_mod.save(weights_out, g, w)
        msg += f" and {len(w)} weights to {weights_out}"
        if not args.weights_out:
            msg += " (--weights-out names another file)"
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


def _replay(args, snapshots) -> None:
    """Give --print-ir-after-all, --time-passes and --dump-dir what a pipeline already run left in
    ``snapshots`` (the graph before it and after each pass, with the pass's time and rewrite trace)."""
    from .passes import DumpToDir, PrintIRAfterAll, TimePasses

    instruments = ([PrintIRAfterAll(sys.stdout)] if args.print_ir_after_all else []) \
        + ([TimePasses(sys.stderr)] if args.time_passes else []) + ([DumpToDir(args.dump_dir)] if args.dump_dir else [])
    if not instruments or not snapshots.items:
        return
    for ins in instruments:
        ins.before_pipeline(snapshots.items[0].graph)
        for snap in snapshots.items[1:]:  # instruments print a pass by its label
            ins.on_trace(snap.label, snap.trace)
            ins.after_pass(snap.label, snap.graph, snap.seconds)
        ins.after_pipeline(snapshots.items[-1].graph)


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


def _random_inputs(graph, given: dict, seed: int, memory_budget=None) -> dict:
    from .budget import Tensor, check_tensors, value_bytes
    from .weights import random_tensor

    rng = np.random.default_rng(seed)
    out = dict(given)
    todo = [v for v in graph.inputs if v.name not in out]
    check_tensors([Tensor(v.name, v.type, value_bytes(v.type)) for v in todo], memory_budget,
                  f"--random-inputs for @{graph.name}", "to hold its inputs", graph.loc)
    for v in todo:
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
    if (args.weights or args.random_weights is not None) and not weights_mod.params(g):
        flag = "--weights" if args.weights else "--random-weights"
        raise LadderError(f"{args.file}: {flag} given, but @{g.name} has no params to take weights")
    if args.weights:
        w = weights_mod.load(args.weights)
    elif args.random_weights is not None:
        w = weights_mod.random(g, args.random_weights)
    inputs = _parse_inputs(args.input)
    if args.random_inputs is not None:
        if all(v.name in inputs for v in g.inputs):
            raise LadderError(f"--random-inputs given, but every input of @{g.name} comes from --input")
        inputs = _random_inputs(g, inputs, args.random_inputs, args.memory_budget)
    with Task(f"compiling @{g.name} for {target}") as compiling:
        module = compile_graph(g, target, w, pipeline="" if args.pipeline else None, threads=args.threads,
                               tuning=args.tuning, memory_budget=args.memory_budget)
    if not args.pipeline:  # the instruments then apply to the target's own pipeline, which compile ran
        _replay(args, module.snapshots)
    with Task(f"running @{g.name} on {target}") as running:
        results = module(inputs)
    print(f"compiled in {seconds_text(compiling.seconds)}, ran in {seconds_text(running.seconds)}", file=sys.stderr)
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
    with Task(f"compiling @{g.name} for {target}") as compiling:
        module = compile_graph(g, target, w, cache=False, jit=False, tuning=args.tuning,
                               memory_budget=args.memory_budget)
        files = module.write(args.output, emit)
    print("wrote " + ", ".join(str(f) for f in files) + f" (compiled in {seconds_text(compiling.seconds)})")
    return 0


def cmd_demo(args) -> int:
    from .demo import main

    return main(size=args.size, seed=args.seed, tokens=args.tokens)


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise LadderError(f"--prompt-ids expects comma-separated token ids like 1,2,3, got '{text}'") from None


def _prompt(args):
    """(prompt ids, the tokenizer when the prompt is text)."""
    if args.prompt_ids is not None:
        if args.chat:
            raise LadderError("--chat takes the prompt as text (--prompt)")
        return _parse_ids(args.prompt_ids), None
    from .tokenizer import load as load_tokenizer

    tok = load_tokenizer(args.model)
    text = tok.chat([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    return tok.encode(text), tok


def cmd_generate(args) -> int:
    from .generate import Generation, ModuleRunner, Sampler, check, generate, load_model, report, signature, stream

    if args.cpu and not args.target.startswith("cpu"):
        raise LadderError(f"--cpu {args.cpu} goes with --target cpu, not --target {args.target}")
    target = f"cpu:{args.cpu}" if args.cpu else args.target
    if target not in TARGETS and not target.startswith("asic:"):
        raise LadderError(f"unknown target '{target}'; available: {', '.join(TARGETS)}, asic:CONFIG")
    prompt, tok = _prompt(args)
    pick = Sampler(args.temperature, args.top_k, args.top_p, args.seed)
    model = load_model(args.model, prompt_len=max(len(prompt), 1), weights=args.weights,
                       random_weights=args.random_weights, prefill_path=args.prefill, context=args.context,
                       max_new=args.max_new, kv_cache=args.kv_cache)
    check(model.prefill, model.decode, prompt, args.max_new)  # before compiling
    runner = ModuleRunner(target, model.weights, args.threads, tuning=args.tuning, memory_budget=args.memory_budget)
    with Task(f"compiling @{model.decode.name} for {target}"):
        seconds = runner.prepare(model.prefill, model.decode)  # compile before timing
    print(f"@{model.decode.name} on {target}: compiled in {seconds:.2f} s", flush=True)
    if args.profile:
        from .profile import format_profile, profile_decode

        print(format_profile(profile_decode(model.prefill, model.decode, prompt, runner, args.max_new)))
        return 0
    if tok is not None:  # text: stream it as it decodes, stop at end of sequence
        gen, text = Generation(prompt, [], 0.0, 0.0), tok.stream()
        for t in stream(model.prefill, model.decode, prompt, args.max_new, runner, pick, tok.eos, gen):
            sys.stdout.write(text.push(t))
            sys.stdout.flush()
        print(text.flush())
        report(gen, sys.stdout)
        return 0
    prefill_steps = -(-len(prompt) // signature(model.prefill).seq)
    with Task("generating", total=prefill_steps + args.max_new - 1, unit="step") as steps:
        def counted(graph, inputs):  # the bar advances once per step graph run
            out = runner(graph, inputs)
            steps.update()
            return out

        gen = generate(model.prefill, model.decode, prompt, args.max_new, counted, pick)
    report(gen, sys.stdout)
    return 0


def cmd_tune(args) -> int:
    from .tune import format_choices, problems_of, tune

    target = f"cpu:{args.cpu}" if args.cpu else args.target
    if not target.startswith("cpu"):
        raise LadderError(f"ladder tune measures cpu kernels; --target must be a cpu target, got '{target}'")
    problems = problems_of(_load(args.file), target, args.tables)
    if not problems:
        print(f"{args.file}: no low-bit matmul the lut pass could rewrite; nothing to tune")
        return 0
    t0 = time.perf_counter()
    choices = tune(problems, target, args.threads, args.output, budget=args.budget, progress=True)
    print(format_choices(choices))
    print(f"tuned {len(problems)} shape(s) in {seconds_text(time.perf_counter() - t0)}")
    print(f"wrote {len(choices)} record(s) to {args.output}; compiles use them only when asked: "
          f"ladder run {args.file} --target {target} --tuning {args.output}, or "
          f"ladder.compile(..., tuning={args.output!r})")
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
    rows = sweep(workload, cfg, axes, progress=sys.stderr.isatty(), scheduler=args.scheduler, workers=args.workers)
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

    def compile_opts(s):
        s.add_argument("--tuning", metavar="FILE", help="tuning records written by 'ladder tune' (cpu targets): they "
                                                        "choose decode or table lookup per matmul shape; without "
                                                        "them the cost model does")
        s.add_argument("--memory-budget", metavar="SIZE", help="refuse a graph whose buffers need more: bytes, 8G, "
                                                               "512M, 50%% (of this machine's memory) or unlimited "
                                                               "(default: 75%% of this machine's memory)")

    s = sub.add_parser("opt", help="run a pass pipeline over a .lir file")
    s.add_argument("file")
    pipeline_opts(s, required=True)
    s.add_argument("-o", "--output", help="write the result here instead of stdout")
    s.set_defaults(fn=cmd_opt)

    what = "run a model (.lir, .onnx or .gguf) on inputs and weights; says how long compiling and running took (stderr)"
    s = sub.add_parser("run", help=what, description=what[0].upper() + what[1:] + ".")
    s.add_argument("file", help="a .lir graph, or an .onnx or .gguf model (which hold their weights)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--weights", help="a safetensors file holding every param by name")
    w.add_argument("--random-weights", type=int, metavar="SEED", help="seeded random weights")
    s.add_argument("--input", action="append", default=[], metavar="NAME=PATH.npy", help="an input (repeatable)")
    s.add_argument("--random-inputs", type=int, metavar="SEED", help="seeded random values for inputs not given")
    s.add_argument("--output", help="write the outputs to this .npz, keyed by value name")
    s.add_argument("--target", default="ref", help=f"where to run: {', '.join(TARGETS)} or asic:CONFIG (its "
                                                   f"functional simulator) (default ref)")
    s.add_argument("--cpu", metavar="LEVEL|NAME",
                   help="force a cpu: native, generic, avx2, avx512 or an LLVM cpu name (znver4, ...) (--target cpu)")
    s.add_argument("--threads", type=int, help="threads for the cpu target (default: the usable cores)")
    s.add_argument("--shape", action="append", metavar="NAME=DIMS", help="fix a symbolic input shape, e.g. x=1x2560")
    compile_opts(s)
    pipeline_opts(s, required=False)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("import", help="convert an ONNX or GGUF model or a Hugging Face folder to .lir (+ its "
                                      "weights as safetensors)")
    s.add_argument("file", help="a .onnx or .gguf file, or a Hugging Face model folder (config.json + safetensors)")
    s.add_argument("-o", "--output", required=True, help="the .lir to write")
    s.add_argument("--weights-out", help="write the model's weights to this safetensors file")
    s.add_argument("--shape", action="append", metavar="NAME=DIMS", help="fix a symbolic input shape, e.g. x=1x2560")
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("compile", help="compile ahead of time: a shared library + C header (+ weights), or IR")
    s.add_argument("file")
    s.add_argument("-o", "--output", required=True, help="the file to write (model.so, model.ll, ...)")
    s.add_argument("--target", default="cpu",
                   help="cpu, cpu:native, cpu:generic, cpu:avx2, cpu:avx512 or asic:CONFIG (e.g. asic:lut-tc)")
    s.add_argument("--cpu", metavar="LEVEL|NAME",
                   help="force a cpu: native, generic, avx2, avx512 or an LLVM cpu name (znver4, ...)")
    s.add_argument("--emit", choices=["so", "llvm", "asm", "obj", "isa"], default=None,
                   help="so (default for cpu), llvm, asm, obj; isa: the program's assembly (asic targets)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--weights", help="a safetensors file holding every param by name")
    w.add_argument("--random-weights", type=int, metavar="SEED", help="seeded random weights")
    s.add_argument("--shape", action="append", metavar="NAME=DIMS", help="fix a symbolic input shape")
    compile_opts(s)
    s.set_defaults(fn=cmd_compile)

    s = sub.add_parser("demo", help="a BitNet-shaped model end to end on built-in seeded weights")
    s.add_argument("--size", choices=list(SIZES), default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tokens", type=int, default=8, help="tokens to generate")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("generate", help="generation: prefill a prompt, then decode with the KV cache")
    s.add_argument("model", help="a .gguf file, a Hugging Face model folder, or a .lir step graph (see "
                                 "ladder.generate for the convention)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--weights", help="the .lir model's params: a safetensors file")
    w.add_argument("--random-weights", type=int, metavar="SEED", help="seeded random params for a .lir model")
    pg = s.add_mutually_exclusive_group(required=True)
    pg.add_argument("--prompt", metavar="TEXT", help="the prompt as text (the model's tokenizer; streams text)")
    pg.add_argument("--prompt-ids", metavar="IDS", help="the prompt's token ids, e.g. 1,2,3")
    s.add_argument("--chat", action="store_true", help="wrap --prompt in the model's chat template")
    s.add_argument("--max-new", type=int, default=32, help="tokens to generate (default 32)")
    s.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sample")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    s.add_argument("--top-p", type=float, default=1.0, help="sample within probability mass p (default 1)")
    s.add_argument("--seed", type=int, help="seed of the sampler")
    s.add_argument("--target", default="cpu", help=f"where to run: {', '.join(TARGETS)} or asic:CONFIG (its "
                                                   f"functional simulator) (default cpu)")
    s.add_argument("--cpu", metavar="LEVEL|NAME",
                   help="force a cpu: native, generic, avx2, avx512 or an LLVM cpu name (znver4, ...)")
    s.add_argument("--threads", type=int, help="threads for the cpu target (default: the usable cores)")
    s.add_argument("--prefill", metavar="FILE.lir", help="a step graph with more tokens per step for the prompt")
    s.add_argument("--context", type=int, help="cache capacity of a .gguf model or HF folder (default: prompt "
                   "+ --max-new, at most the model's context length)")
    s.add_argument("--kv-cache", default="f16", choices=("f16", "f32", "bf16"),
                   help="KV cache element type of a .gguf model or HF folder (default f16, as llama.cpp)")
    s.add_argument("--profile", action="store_true", help="instead of printing the text, time each op of a decode "
                   "step (cpu targets) and the generate loop's Python work per token")
    compile_opts(s)
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
    s.add_argument("--scheduler", help="a Dask scheduler address (tcp://host:8786) to run the grid on a cluster; "
                                       "'serial': in this process (default: a local Dask cluster)")
    s.add_argument("--workers", type=int, help="local worker processes (default: the usable cores)")
    s.set_defaults(fn=cmd_sweep)
    from .backends.asic.fit import add_fit_parser
    add_fit_parser(sub)

    s = sub.add_parser("tune", help="time decode vs table lookup for a graph's low-bit matmuls; write the choices "
                                    "to a tuning file")
    s.add_argument("file")
    s.add_argument("--target", default="cpu", help="a cpu target this machine runs (default cpu)")
    s.add_argument("--cpu", metavar="LEVEL|NAME",
                   help="force a cpu: native, generic, avx2, avx512 or an LLVM cpu name (znver4, ...)")
    s.add_argument("--threads", type=int, help="threads to tune for (default: the usable cores)")
    s.add_argument("--budget", type=float, default=0.25, help="seconds of timing per kernel variant (default 0.25)")
    s.add_argument("-o", "--output", default="tune.json",
                   help="the tuning file to write (merged when it exists; default tune.json)")
    s.add_argument("--tables", choices=["f32", "i8", "i8-fast"], default="f32",
                   help="tables for f32 activations, as the lut pass builds them: f32 (default pipeline), i8 "
                        "(lut{quantize=true}) or i8-fast (+ fast_aggregation)")
    s.set_defaults(fn=cmd_tune)
    return p


def _check_flags(args) -> None:
    """Refuse a flag the command would otherwise ignore: a user who gives one expects it to act."""
    model = str(getattr(args, "file", None) or getattr(args, "model", None) or "")
    if getattr(args, "shape", None) and model.lower().endswith(".lir"):
        raise LadderError(f"--shape fixes symbolic input dimensions of .onnx and .gguf models; the shapes of "
                          f"{model} are written in it")
    target = getattr(args, "target", None)
    if getattr(args, "threads", None) is not None and target is not None:
        if args.threads <= 0:
            raise LadderError(f"--threads must be positive, got {args.threads}")
        if not target.startswith("cpu"):
            raise LadderError(f"--threads sets the threads of a cpu target; --target {target} does not use them")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_flags(args)
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
