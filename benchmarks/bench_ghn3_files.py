"""Reading and converting released-format GHN-3 files: time and peak memory per step.

Usage (from the repository root):

    python benchmarks/bench_ghn3_files.py ghn3-t ghn3-l [--workdir /tmp/ghn3-bench]

For each registry GHN-3 named, writes a GHN-3 with random weights in the released file format
(``joblib.dump(state_dict)``'s pickle: protocol 4, tensors pickled by torch) into ``--workdir``
(deleted afterwards; never commit one), then runs each step in a fresh process and reports its
wall and CPU time and how far the step raises the process's peak resident memory (VmHWM, reset
after a warm-up conversion of a tiny GHN-3 has done every import) above its resident size before
the step (Linux only):

- ``read .pt``: ``read_ghn_file`` of the pickle (restricted unpickler, config inference, layout check);
- ``convert``: ``convert_ghn`` of the pickle to ghnorth's safetensors format;
- ``read .safetensors``: ``read_ghn_file`` of the conversion (what every later load does).

Prints a Markdown table on stdout (append it to benchmarks/results/ghn3_files.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STEP = """
import json, sys, time
from ghnorth_cli.ghn.io import convert_ghn, read_ghn_file
step, src, dst, warmup = sys.argv[1:5]
convert_ghn(warmup, warmup + ".safetensors")  # a tiny GHN-3 first: every lazy import and first-call cost

def rss(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1e6  # kB -> GB

base = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
wall, cpu = time.perf_counter(), time.process_time()
if step == "convert":
    convert_ghn(src, dst)
else:
    read_ghn_file(src)
print(json.dumps({"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
                  "base_gb": base, "peak_gb": rss("VmHWM:")}))
"""
WARMUP = dict(max_shape=(16, 16, 11, 11), num_classes=10, hid=16, hypernet="transformer", weight_norm=True,
              ve=True, layernorm=True, layers=1, heads=8)


def write_random_released(config, path: Path) -> int:
    """A random-weight GHN-3 with ``config`` in the released format; returns its byte size."""
    import collections
    import pickle

    import torch

    from ghnorth_cli.ghn.io import ghn_tensor_shapes

    gen = torch.Generator().manual_seed(0)
    state = collections.OrderedDict((k, 0.02 * torch.randn(s, generator=gen))
                                    for k, s in ghn_tensor_shapes(config).items())
    with path.open("wb") as f:
        pickle.dump(state, f, protocol=4)
    return path.stat().st_size


def run_step(step: str, src: Path, dst: Path, warmup: Path) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", STEP, step, str(src), str(dst), str(warmup)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="registry GHN-3 names, e.g. ghn3-t ghn3-l")
    parser.add_argument("--workdir", default=None, help="folder for the temporary files (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ghn3-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; one thread per step")
    print()
    print("| GHN | file | step | wall s | CPU s | peak RSS increase GB |")
    print("|---|---:|---|---:|---:|---:|")
    from ghnorth_cli.ghn.config import GHNConfig
    from ghnorth_cli.ghn.registry import REGISTRY

    try:
        warmup = root / "warmup.pt"
        write_random_released(GHNConfig(**WARMUP), warmup)
        for name in args.names:
            pt, st = root / f"{name}.pt", root / f"{name}.safetensors"
            size = write_random_released(REGISTRY[name].config, pt)
            for step, src in (("read .pt", pt), ("convert", pt), ("read .safetensors", st)):
                result = run_step("convert" if step == "convert" else "read", src, st, warmup)
                print(f"| {name} | {size / 1e6:.1f} MB | {step} | {result['seconds']:.2f} | "
                      f"{result['cpu_seconds']:.2f} | {result['peak_gb'] - result['base_gb']:.2f} |", flush=True)
            pt.unlink()
            st.unlink()
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
