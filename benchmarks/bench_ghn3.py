"""Benchmark GHN-3 prediction: warm one-thread speed, memory over repeated calls, and GHN-3-XL end to end.

    python benchmarks/bench_ghn3.py                   # all three parts, CPU
    python benchmarks/bench_ghn3.py --skip-xl         # without the 2.6 GB GHN-3-XL part
    python benchmarks/bench_ghn3.py --device cuda --skip-xl --out /tmp/ghn3_cuda

1. Speed: ResNet-50 and ConvNeXt-Base with GHN-3-T, in-process, warm, one thread (the machinery of
   bench_predict.py: graph capture included, best and median of ``--repeats``), against the
   reference's 1.2 s and 3.7 s (the issue's figures on the project's 2-core machine), and the whole
   ``ghnorth predict`` command.
2. Memory: ``--calls`` predictions in a row (new tensors each time, as ``predict`` without
   ``inplace``); the resident memory after each call, to show it stays flat.
3. GHN-3-XL: a random-weight GHN-3-XL (hid 384, 24 layers, 16 heads; 654 M parameters) is built and
   written in ghnorth's GHN format to a temporary folder (deleted afterwards, never committed), then
   the whole ``ghnorth predict -a torchvision:resnet50`` command runs with it: wall time and peak
   resident memory of that process.

GHN-3-T is the random-weight parity fixture (same network and cost as the released ``ghn3tm8.pt``).
Results go to ``<out>.json`` and ``<out>.md`` (default ``benchmarks/results/ghn3``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_predict import measure_one, time_cli  # noqa: E402  (one timing machinery for both GHNs)

FIXTURE_GHN3 = HERE.parents[1] / "shared" / "fixtures" / "ghn3-parity" / "ghn3tm8_random.pt"
REFERENCE_S = {"resnet50": 1.2, "convnext_base": 3.7}  # the reference GHN-3-T, one thread (the issue)
XL_CONFIG = dict(max_shape=(384, 384, 16, 16), num_classes=1000, hid=384, hypernet="transformer",
                 weight_norm=True, ve=True, layernorm=True, layers=24, heads=16)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_over_calls(name: str, *, ghn: str, calls: int, device: str) -> dict:
    """Resident memory after each of ``calls`` predictions (run in a child process)."""
    import torchvision

    from ghnorth_cli.ghn.predict import predict
    from ghnorth_cli.ghn.registry import load_pretrained

    network = load_pretrained(ghn, device=device)
    model = torchvision.models.get_model(name)
    rss = []
    for _ in range(calls):
        predict(model, network)  # new tensors each call, dropped
        rss.append(_rss_mb())
    return {"model": name, "calls": calls, "rss_mb": rss, "growth_after_warmup_mb": rss[-1] - rss[min(2, calls - 1)]}


def build_xl(path: str, *, seed: int) -> dict:
    """Write a random-weight GHN-3-XL in ghnorth's GHN format (run in a child process)."""
    import torch

    from ghnorth_cli.ghn.config import GHNConfig
    from ghnorth_cli.ghn.ghn3 import GHN3
    from ghnorth_cli.ghn.io import ghn_bytes

    torch.manual_seed(seed)
    config = GHNConfig(**XL_CONFIG)
    ghn = GHN3(config)
    n_params = sum(p.numel() for p in ghn.parameters())
    Path(path).write_bytes(ghn_bytes(config, ghn.state_dict(), source={"file": "random GHN-3-XL", "seed": seed}))
    return {"params": n_params, "bytes": Path(path).stat().st_size}


def run_measured(cmd: list[str]) -> dict:
    """Wall time and peak resident memory of one command (run in a child process of its own)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def xl_predict(*, device: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        xl = str(Path(tmp) / "ghn3-xl-random.safetensors")
        built = _child(["--build-xl", xl, "--seed", str(seed)])
        cmd = [sys.executable, "-m", "ghnorth_cli", "-q", "predict", "-a", "torchvision:resnet50", "--ghn", xl,
               "--device", device, "-o", str(Path(tmp) / "resnet50.safetensors")]
        measured = _child(["--measure", json.dumps(cmd)])
        return {**built, **measured, "model": "resnet50", "device": device}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _markdown(result: dict) -> str:
    env = result["env"]
    lines = ["# GHN-3 benchmark", "",
             f"{env['time']}, {env['machine']}, torch {env['torch']}, load average before: {env['load']}. "
             f"GHN-3-T: `{env['ghn']}` (random weights, the released file format). Best of {env['repeats']} "
             "warm in-process runs, one thread.", "",
             "| model | device | nodes | params | graph (s) | GHN (s) | total (s) | median (s) | total CPU (s) "
             "| `ghnorth predict` (s) | reference (s) | total / reference | total CPU / reference |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["speed"]:
        ref = REFERENCE_S.get(r["model"])
        ratio = "" if ref is None else f"{r['total_s'] / ref:.2f}"
        cpu_ratio = "" if ref is None else f"{r['total_cpu_s'] / ref:.2f}"
        lines.append(f"| {r['model']} | {r['device']} | {r['nodes']} | {r['params'] / 1e6:.1f}M | {r['graph_s']:.3f} "
                     f"| {r['ghn_s']:.3f} | {r['total_s']:.3f} | {r['total_median_s']:.3f} | {r['total_cpu_s']:.3f} "
                     f"| {r['cli_s']:.2f} | {ref or ''} | {ratio} | {cpu_ratio} |")
    for m in result.get("memory", []):
        rss = m["rss_mb"]
        lines += ["", f"Memory, {m['model']}, {m['calls']} predictions in a row: resident {rss[0]:.0f} MB after the "
                  f"first, {rss[-1]:.0f} MB after the last (growth after the third: "
                  f"{m['growth_after_warmup_mb']:+.1f} MB; max {max(rss):.0f} MB)."]
    lines += ["", "Times are wall-clock unless marked CPU; prediction runs on one thread, so on an idle machine "
              "its wall time is close to its CPU time, and on a shared one (see the load average) CPU time is "
              "the fair comparison. Reference: the issue's figures for the reference GHN-3-T on the project's "
              "2-core machine."]
    if "xl" in result:
        x = result["xl"]
        when = f" (measured {x['time']}, load average {x['load']})" if "time" in x else ""
        lines += ["", f"GHN-3-XL{when}: random weights, {x['params'] / 1e6:.0f} M parameters, "
                  f"a {x['bytes'] / 1e9:.2f} GB "
                  f"file; the whole `ghnorth predict -a torchvision:resnet50 --device {x['device']}` command took "
                  f"{x['wall_s']:.1f} s ({x['cpu_s']:.1f} s CPU) with a peak resident memory of "
                  f"{x['peak_rss_mb'] / 1024:.2f} GiB (limit: 24 GiB)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet50", "convnext_base"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ghn", default=str(FIXTURE_GHN3))
    parser.add_argument("--skip-xl", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ghn3")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one speed measurement
    parser.add_argument("--memory", help=argparse.SUPPRESS)  # internal: one memory measurement
    parser.add_argument("--build-xl", help=argparse.SUPPRESS)  # internal: write a random XL
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: time one command
    parser.add_argument("--render", type=Path, help="Only write <out>.md again from a results JSON file.")
    args = parser.parse_args()
    if args.render:
        args.out.with_suffix(".md").write_text(_markdown(json.loads(args.render.read_text())))
        return None
    if args.one:
        return print(json.dumps(measure_one(args.one, ghn=args.ghn, repeats=args.repeats, device=args.device)))
    if args.memory:
        return print(json.dumps(memory_over_calls(args.memory, ghn=args.ghn, calls=args.calls, device=args.device)))
    if args.build_xl:
        return print(json.dumps(build_xl(args.build_xl, seed=args.seed)))
    if args.measure:
        return print(json.dumps(run_measured(json.loads(args.measure))))

    import torch

    env = {"time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()} CPUs, "
           f"{platform.processor() or platform.machine()}", "torch": torch.__version__,
           "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "ghn": args.ghn, "repeats": args.repeats}
    common = ["--device", args.device, "--ghn", args.ghn]
    result: dict = {"env": env, "speed": [], "memory": []}
    for name in args.models:
        row = _child(["--one", name, "--repeats", str(args.repeats), *common])
        row["cli_s"] = time_cli(name, ghn=args.ghn, device=args.device)
        result["speed"].append(row)
        print(f"{name}: total {row['total_s']:.3f} s (median {row['total_median_s']:.3f} s), "
              f"CLI {row['cli_s']:.2f} s", file=sys.stderr)
    result["memory"].append(_child(["--memory", args.models[0], "--calls", str(args.calls), *common]))
    if not args.skip_xl:
        result["xl"] = xl_predict(device=args.device, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
