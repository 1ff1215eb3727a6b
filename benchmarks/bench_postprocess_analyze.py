"""Time GHN-orth post-processing and the correlation analysis on ConvNeXt-Base (88.6M parameters).

Usage (from the repository root):

    python benchmarks/bench_postprocess_analyze.py [--arch torchvision:convnext_base] [--repeats 3] [--workdir DIR]

Writes a default-init checkpoint of the model, then times (wall clock, best of ``--repeats``):
the library calls ``postprocess`` (the convnext_base-paper preset: beta 3e-5, orth from 94, noise on all layers)
and ``analyze_tensors``; and once each, as a user runs them, the commands ``ghnorth postprocess`` and
``ghnorth analyze --json`` / ``--plot`` (process start, imports, reading and writing included).
Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _best_of(repeats: int, fn) -> tuple[float, float]:
    """Best wall time of ``repeats`` calls, and the process CPU time (all threads) of that call."""
    best = (math.inf, math.inf)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def _timed_command(args: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one ``ghnorth`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ghnorth_cli", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - wall, cpu


def _make_checkpoint(arch: str, path: Path):
    from ghnorth_cli.checkpoint import model_tensors, provenance, write_checkpoint
    from ghnorth_cli.models import create_model, resolve_spec

    spec = resolve_spec(arch)
    tensors, order = model_tensors(create_model(spec, seed=0))
    write_checkpoint(path, tensors, spec=spec, order=order, history=[provenance(command="bench", options={}, seed=0)])
    return tensors, order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="torchvision:convnext_base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from ghnorth_cli.analysis import analyze_tensors, layer_names
    from ghnorth_cli.postprocess import PRESETS, postprocess

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ghnorth-bench-"))
    ckpt = workdir / "model.safetensors"
    tensors, order = _make_checkpoint(args.arch, ckpt)
    preset = PRESETS["convnext_base-paper"]
    n_params = sum(t.numel() for t in tensors.values())
    n_layers = len(layer_names(tensors, order))

    def run_postprocess():
        postprocess(tensors, order, beta=preset.beta, orth_from=preset.orth_from,
                    generator=torch.Generator().manual_seed(0))

    print(f"{args.arch}: {n_params / 1e6:.1f}M values in the checkpoint, {n_layers} conv/linear layers; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; load average before: {_load()}; best of {args.repeats} "
          f"for library calls, one run for commands\n")
    print("| what | wall s | CPU s |\n| --- | ---: | ---: |", flush=True)
    orth = workdir / "orth.safetensors"
    steps = [
        ("library `postprocess(...)` (beta 3e-5, orth from 94)", lambda: _best_of(args.repeats, run_postprocess)),
        ("library `analyze_tensors(...)`", lambda: _best_of(args.repeats, lambda: analyze_tensors(tensors, order))),
        ("`ghnorth postprocess model.safetensors -o orth.safetensors --preset convnext_base-paper`",
         lambda: _timed_command(["postprocess", str(ckpt), "-o", str(orth), "--preset", "convnext_base-paper"])),
        ("`ghnorth analyze model.safetensors --json`", lambda: _timed_command(["analyze", str(ckpt), "--json"])),
        ("`ghnorth analyze model.safetensors orth.safetensors --plot fig2.png`",
         lambda: _timed_command(["analyze", str(ckpt), str(orth), "--plot", str(workdir / "fig2.png")])),
    ]
    for what, step in steps:
        wall, cpu = step()
        print(f"| {what} | {wall:.2f} | {cpu:.2f} |", flush=True)
    print(f"\nload average after: {_load()}")


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
