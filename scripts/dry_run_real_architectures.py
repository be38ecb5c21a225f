#!/usr/bin/env python
"""Full-size random-weight dry runs (issue 23): every helper path on every family's real architecture.

Each family is built from its published configuration (``data/configs/<family>/``) with random
weights -- compute, memory and shapes do not depend on the weights' values -- and every helper path
runs for ``--steps`` steps (:func:`helpers.bench.real_architectures.run_paths`): the stock call,
attention recording at every resolution, the ``trace`` facade, embedding surgery, K/V substitution, a guidance schedule,
the trajectory and the FFT band split. Per path: OK or the error, seconds per denoising step, peak
memory. Nothing is downloaded; the images mean nothing.

    python scripts/dry_run_real_architectures.py --device cuda --dtype float16 --steps 2
    python scripts/dry_run_real_architectures.py --families sd15 --device cpu --height 256 --width 256
    python scripts/dry_run_real_architectures.py --paths trace   # one path, merged into the existing JSONs

Writes ``<out>/<family>.json`` (default ``results/dry_runs/<device>/``) and ``<out>/summary.md``. Each
family runs in its own process (the memory figures are its own; a crash loses only that family) and
is resumable: a family whose JSON exists is skipped unless ``--force``. A family that fails to build
or crashes leaves ``<family>.error.json`` and is retried next time.

PixArt's T5-v1.1-XXL encoder (4.76e9 parameters: 19 GB in float32, 9.5 GB in bfloat16) is built at its
real width with ``--t5-layers`` of its 24 layers (default 4, so the family fits in 24 GB in any dtype);
the JSON and the summary then give the measured figures and, LABELLED AS ESTIMATES, the full
encoder's parameters, peak memory and encoding time scaled by layers (denoising steps do not run T5).
``--t5-layers 24`` builds the whole encoder (use ``--dtype bfloat16`` on a 24 GB card). PixArt's
tokenizer is a stand-in (T5's real vocabulary cannot be built offline; compute does not change:
prompts are padded to 120 tokens). On the CPU the memory figure is the process's peak RSS (build
included); on CUDA ``torch.cuda.max_memory_allocated`` during each path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAMILIES = ("sd15", "sd21", "sdxl", "pixart")  # = helpers.bench.real_architectures.FAMILIES (tests check)
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("cpu", "cuda")
DEFAULT_T5_LAYERS = 4
T5_REAL_LAYERS = 24


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; one sentence (``parser.error``, exit status 2) on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), metavar="FAMILY",
                        help=f"families to run, of {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per pipeline call (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)} (default float32)")
    parser.add_argument("--height", type=int, default=None,
                        help="reduced resolution: image height in pixels, a multiple of 64 (default: native)")
    parser.add_argument("--width", type=int, default=None, help="image width, equal to --height (square latents)")
    parser.add_argument("--t5-layers", type=int, default=DEFAULT_T5_LAYERS,
                        help=f"PixArt: T5 layers to build at the real width, 1..24 (default {DEFAULT_T5_LAYERS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/dry_runs/<device>/)")
    parser.add_argument("--force", action="store_true", help="rerun families whose result JSON exists")
    parser.add_argument("--paths", nargs="+", default=None, metavar="PATH",
                        help="run only these helper paths and merge them into the family's existing JSON "
                             "(implies --force for them; default: every path)")
    parser.add_argument("--in-process", action="store_true", help="run the families in this process (debugging)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one family here
    args = parser.parse_args(argv)
    unknown = [f for f in args.families + ([args.child] if args.child is not None else []) if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}: choose among {', '.join(FAMILIES)}.")
    if args.device not in DEVICES:
        parser.error(f"--device must be cpu or cuda, not {args.device!r}.")
    if args.dtype not in DTYPES:
        parser.error(f"--dtype must be one of {', '.join(DTYPES)}, not {args.dtype!r}.")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, not {args.steps}.")
    if (args.height is None) != (args.width is None) or args.height != args.width:
        parser.error("give --height and --width together and equal (the helpers draw square latents).")
    if args.height is not None and (args.height <= 0 or args.height % 64):
        parser.error(f"--height and --width must be positive multiples of 64 pixels, not {args.height}.")
    if args.paths is not None:
        from helpers.bench.real_architectures import PATHS

        bad = [p for p in args.paths if p not in PATHS]
        if bad:
            parser.error(f"unknown helper path {bad[0]!r}: choose among {', '.join(PATHS)}.")
    if not 1 <= args.t5_layers <= T5_REAL_LAYERS:
        parser.error(f"--t5-layers must be between 1 and {T5_REAL_LAYERS}, not {args.t5_layers}.")
    args.families = list(dict.fromkeys(args.families))
    return args


def _jsonable(value):
    """Strict JSON: non-finite floats become null, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False))
    tmp.replace(path)


def out_dir(args: argparse.Namespace) -> Path:
    """``--out``, else ``<results>/dry_runs/<device>/``."""
    if args.out is not None:
        return args.out
    from helpers.resources import results_dir

    return results_dir() / "dry_runs" / args.device


def run_family(family: str, args: argparse.Namespace, out: Path) -> dict:
    """Build ``family`` and run every path in this process; writes and returns ``<out>/<family>.json``."""
    import diffusers
    import torch
    import transformers

    from helpers.bench import real_architectures as ra

    dtype = getattr(torch, args.dtype)
    t5_layers = args.t5_layers if family == "pixart" else None
    print(f"[{family}] building {ra.MODEL_IDS[family]} with random weights ({args.dtype}, {args.device}"
          + (f", T5 with {t5_layers} of {T5_REAL_LAYERS} layers" if t5_layers else "") + ") ...", flush=True)
    start = time.perf_counter()
    pipe = ra.build(family, dtype=dtype, t5_layers=t5_layers, seed=args.seed, device=args.device)
    build_seconds = time.perf_counter() - start
    counts = ra.parameter_counts(pipe)
    print(f"[{family}] built in {build_seconds:.0f} s: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()),
          flush=True)
    result = ra.run_paths(pipe, steps=args.steps, height=args.height, width=args.width,
                          log=lambda m: print(f"[{family}] {m.strip()}", flush=True), paths=args.paths)
    previous = out / f"{family}.json"
    if args.paths is not None and previous.exists():  # merge the rerun paths into the earlier full run
        merged = json.loads(previous.read_text())
        kept = {k: v for k, v in merged["paths"].items() if k not in result["paths"]}
        merged["paths"] = {k: result["paths"].get(k, kept.get(k)) for k in ra.PATHS if k in result["paths"] or k in kept}
        merged.setdefault("reruns", []).append({"paths": list(result["paths"]), "steps": result["steps"],
                                                "image_size": result["image_size"], "threads": torch.get_num_threads(),
                                                "shared_machine": bool(os.environ.get("T2I_SHARED_MACHINE")),
                                                "date": time.strftime("%Y-%m-%d")})
        result = {**merged, "paths": merged["paths"]}
        _write(previous, result)
        return result
    result.update(family=family, model_id=ra.MODEL_IDS[family], random_weights=True, seed=args.seed,
                  build_seconds=build_seconds, t5_layers=t5_layers,
                  tokenizer=("STAND-IN T5 tokenizer (real vocabulary not buildable offline)" if family == "pixart"
                             else "real CLIP BPE (helpers.text.sd_tokenizer)"),
                  versions={"torch": torch.__version__, "diffusers": diffusers.__version__,
                            "transformers": transformers.__version__, "python": platform.python_version()},
                  machine=(torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"),
                  threads=torch.get_num_threads())
    _write(out / f"{family}.json", result)
    error = out / f"{family}.error.json"
    if error.exists():
        error.unlink()
    return result


def child_argv(family: str, args: argparse.Namespace, out: Path) -> list[str]:
    """The command line of the child process that runs ``family`` alone."""
    argv = ["--child", family, "--out", str(out), "--steps", str(args.steps), "--device", args.device,
            "--dtype", args.dtype, "--t5-layers", str(args.t5_layers), "--seed", str(args.seed)]
    argv += ["--paths", *args.paths] if args.paths else []
    return argv + (["--height", str(args.height), "--width", str(args.width)] if args.height is not None else [])


def _spawn(family: str, args: argparse.Namespace, out: Path) -> None:
    """Run one family in a child process; on a crash leave ``<family>.error.json``."""
    start = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), *child_argv(family, args, out)]
    rc = subprocess.run(cmd, env=dict(os.environ)).returncode
    if rc != 0 and not (out / f"{family}.json").exists():
        _write(out / f"{family}.error.json", {
            "family": family, "returncode": rc, "seconds": time.perf_counter() - start,
            "error": f"the run of {family} exited with status {rc} (see its output; -9 is usually the out-of-memory killer)"})
        print(f"[{family}] FAILED with exit status {rc}", flush=True)


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def summary(out: Path, args: argparse.Namespace) -> Path:
    """``<out>/summary.md``: one row per family and path, from every result JSON in ``out``."""
    gib = 2**30
    lines = [f"# Random-weight dry runs at full architecture size ({args.device})", "",
             "Random weights (compute, memory and shapes do not depend on their values); nothing downloaded. "
             "s/step = denoiser forward time per call (the CFG batch, hooks included). Peak memory: "
             "CUDA max_memory_allocated during the path; CPU the process's peak RSS so far (build included).", "",
             "| family | path | status | s / step | peak GiB | steps | image px | dtype | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for family in FAMILIES:
        path, error = out / f"{family}.json", out / f"{family}.error.json"
        if path.exists():
            r = json.loads(path.read_text())
            for name, e in r["paths"].items():
                s = "" if e.get("seconds_per_step") is None else f"{e['seconds_per_step']:.3f}"
                lines.append(f"| {family} | {name} | {e['status']} | {s} | {e['peak_memory_bytes'] / gib:.2f} | "
                             f"{r['steps']} | {r['image_size']} | {r['dtype']} | {_cell(e.get('error', ''))[:160]} |")
            t5 = r.get("t5_extrapolation")
            if t5:
                enc = t5.get("measured_encode_seconds")
                notes.append(
                    f"- **{family}: T5 built with {t5['layers_built']} of {t5['layers_real']} layers** (width "
                    f"{t5['width']}): measured {t5['params_built'] / 1e9:.2f}e9 parameters, peak "
                    f"{t5['measured_peak_memory_bytes'] / gib:.2f} GiB"
                    + (f", encoding {enc:.3f} s/prompt" if enc is not None else "")
                    + f". ESTIMATED with all {t5['layers_real']} layers: {t5['params_real_estimate'] / 1e9:.2f}e9 "
                    f"parameters, peak {t5['peak_memory_real_estimate_bytes'] / gib:.2f} GiB"
                    + (f", encoding {t5['encode_seconds_real_estimate']:.3f} s/prompt" if enc is not None else "")
                    + " (scaled by layers, not measured).")
            for rerun in r.get("reruns", []):
                notes.append(f"- {family}: path(s) {', '.join(rerun['paths'])} rerun on {rerun['date']} "
                             f"({rerun['steps']} step(s), {rerun.get('image_size')} px, {rerun.get('threads')} thread(s)"
                             + (", beside other jobs" if rerun.get("shared_machine") else "")
                             + "): their s/step is not comparable with the other rows'.")
            if family == "pixart":
                notes.append("- pixart: its tokenizer is a STAND-IN (T5's real vocabulary cannot be built offline).")
        elif error.exists():
            e = json.loads(error.read_text())
            lines.append(f"| {family} | (build/run) | error |  |  |  |  |  | {_cell(e['error'])[:160]} |")
        else:
            lines.append(f"| {family} | (not run) |  |  |  |  |  |  |  |")
    target = out / "summary.md"
    target.write_text("\n".join(lines + ([""] + notes if notes else [])) + "\n")
    return target


def main(argv=None) -> int:
    """Run the requested families (each resumable), then write the summary; returns the exit status."""
    args = parse_args(argv)
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        run_family(args.child, args, out)
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda was asked for but this machine has no CUDA GPU; use --device cpu.",
                  file=sys.stderr)
            return 2
    for i, family in enumerate(args.families, 1):
        if (out / f"{family}.json").exists() and not args.force and args.paths is None:
            print(f"[{family}] ({i}/{len(args.families)}) skipped: {out / f'{family}.json'} exists (--force reruns it)")
            continue
        print(f"[{family}] ({i}/{len(args.families)}) starting", flush=True)
        if args.in_process:
            try:
                run_family(family, args, out)
            except Exception as err:  # keep going with the other families, as the child processes do
                _write(out / f"{family}.error.json", {"family": family, "error": f"{type(err).__name__}: {err}"[:500]})
                print(f"[{family}] FAILED: {type(err).__name__}: {err}", flush=True)
        else:
            _spawn(family, args, out)
    target = summary(out, args)
    print(f"summary: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
