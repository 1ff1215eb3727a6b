"""Benchmark GHN-2 parameter prediction: graph capture, GHN forward, total, peak memory, CLI wall time.

    python benchmarks/bench_predict.py                       # resnet50 and convnext_base
    python benchmarks/bench_predict.py resnet50 --repeats 5 --device cuda

Each model runs in its own process (so peak memory is its own): one warm-up, then ``--repeats``
timed in-process predictions (``predict(model, ghn, inplace=True)``, graph capture included,
the GHN already loaded), reporting the best and median. Then the whole ``ghnorth predict``
command is timed as a subprocess (interpreter start, imports, model build, file written),
alternating with ``python -c "import torch, timm"`` (the floor any such command pays), best of
``--cli-repeats`` each; the goal is a command at most 1.5x the imports.
Results go to a new ``benchmarks/results/predict-<time>.json`` and ``.md`` (``--update``
overwrites the tracked ``predict.json`` and ``predict.md``).

The GHN defaults to the random-weight parity fixture (same network, same cost as the released
one) when it is beside the checkout, else to ``ghn2-imagenet``. The reference's times on the
project's 2-core machine (warm, in-process, its graph building included) are from the issue.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import add_output_arguments, output_stem  # noqa: E402
FIXTURE_GHN = HERE.parents[1] / "shared" / "fixtures" / "ghn2-parity" / "ghn2_random_imagenet.pt"
REFERENCE_S = {"convnext_base": (1.0, 1.4), "resnet50": (0.14, 0.14)}  # the reference implementation


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _digest(params) -> str:
    h = hashlib.sha256()
    for name, tensor in params.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def measure_one(name: str, *, ghn: str, repeats: int, device: str) -> dict:
    """Time in-process predictions for one torchvision model (run in a child process)."""
    import torch
    import torchvision

    from ghnorth_cli.ghn.predict import predict
    from ghnorth_cli.ghn.registry import load_pretrained

    network = load_pretrained(ghn, device=device)
    model = torchvision.models.get_model(name)
    first = predict(model, network, inplace=True)  # warm-up
    digest = _digest(first.params)
    reset = _reset_peak_rss()
    base_rss = _peak_rss_mb()
    graphs, ghns, totals, cpus = [], [], [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = predict(model, network, inplace=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        totals.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        graphs.append(result.timings["graph"])
        ghns.append(result.timings["ghn"])
        assert _digest(result.params) == digest, "predictions differ between runs"
    row = {
        "model": name, "device": device, "nodes": first.graph.n_nodes, "edges": len(first.graph.edges),
        "params": sum(p.numel() for p in model.parameters()), "predicted_tensors": len(first.params),
        "unpredicted_tensors": len(first.unpredicted), "digest": digest,
        "graph_s": min(graphs), "ghn_s": min(ghns), "total_s": min(totals),
        "total_median_s": statistics.median(totals), "total_cpu_s": min(cpus),
        "peak_rss_mb": _peak_rss_mb(), "peak_extra_mb": _peak_rss_mb() - base_rss if reset else None,
    }
    if device.startswith("cuda"):
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        cpu = predict(model, load_pretrained(ghn, device="cpu"), inplace=False).params
        row["max_abs_diff_vs_cpu"] = max((cpu[k] - result.params[k].cpu()).abs().max().item() for k in cpu)
    return row


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def time_cli(name: str, *, ghn: str, device: str, repeats: int) -> tuple[float, float]:
    """Best wall times of the whole ``ghnorth predict`` command and of ``import torch, timm``."""
    cli, imports = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # the name as a user types it (timm's model first, as --arch resolves a bare name)
        cmd = [sys.executable, "-m", "ghnorth_cli", "-q", "predict", "-a", name, "--ghn", ghn,
               "--device", device, "-o", str(Path(tmp) / "out.safetensors")]
        for _ in range(repeats):  # alternate, so that both see the same load
            imports.append(_wall([sys.executable, "-c", "import torch, timm"]))
            cli.append(_wall(cmd))
    return min(cli), min(imports)


def _markdown(rows: list[dict], env: dict) -> str:
    lines = [
        "# `ghnorth predict` benchmark", "",
        f"{env['time']}, {env['machine']}, torch {env['torch']} ({env['threads']} threads), "
        f"load average before: {env['load']}. GHN: `{env['ghn']}`. Best of {env['repeats']} warm runs.", "",
        "| model | device | nodes | params | graph (s) | GHN (s) | total (s) | median (s) | total CPU (s) "
        "| peak extra (MB) | `ghnorth predict` (s) | `import torch, timm` (s) | command / imports "
        "| reference (s) | total / reference |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = REFERENCE_S.get(r["model"])
        ref_text = "" if ref is None else (f"{ref[0]:.2f}" if ref[0] == ref[1] else f"{ref[0]:.1f}-{ref[1]:.1f}")
        ratio = "" if ref is None else f"{r['total_s'] / ref[0]:.2f}" + ("" if ref[0] == ref[1] else
                                                                          f"-{r['total_s'] / ref[1]:.2f}")
        extra = "" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.0f}"
        lines.append(f"| {r['model']} | {r['device']} | {r['nodes']} | {r['params'] / 1e6:.1f}M | {r['graph_s']:.3f} "
                     f"| {r['ghn_s']:.3f} | {r['total_s']:.3f} | {r['total_median_s']:.3f} | {r['total_cpu_s']:.3f} | {extra} "
                     f"| {r['cli_s']:.2f} | {r['imports_s']:.2f} | {r['cli_s'] / r['imports_s']:.2f} "
                     f"| {ref_text} | {ratio} |")
    lines += ["", "graph = `capture_graph`, GHN = network forward + tiling into the model's parameters, "
              "total = both (in-process, warm); total CPU = its processor time (prediction runs on one "
              "thread, so on an idle machine wall time is close to it); peak extra = resident memory above the warm state; "
              "`ghnorth predict` = the whole command as a subprocess (best of "
              f"{env.get('cli_repeats', 1)}, alternating with `python -c \"import torch, timm\"`). Reference: the issue's figures for the "
              "reference implementation on the project's 2-core machine.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet50", "convnext_base"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ghn", default=str(FIXTURE_GHN) if FIXTURE_GHN.is_file() else "ghn2-imagenet")
    parser.add_argument("--cli-repeats", type=int, default=3)
    add_output_arguments(parser, "predict")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, ghn=args.ghn, repeats=args.repeats, device=args.device)))
        return

    import torch

    env = {"time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()} CPUs, "
           f"{platform.processor() or platform.machine()}", "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
           "ghn": args.ghn, "repeats": args.repeats, "cli_repeats": args.cli_repeats}
    rows = []
    for name in args.models:
        child = [sys.executable, __file__, "--one", name, "--repeats", str(args.repeats), "--device", args.device,
                 "--ghn", args.ghn]
        row = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
        row["cli_s"], row["imports_s"] = time_cli(name, ghn=args.ghn, device=args.device, repeats=args.cli_repeats)
        rows.append(row)
        print(f"{name}: graph {row['graph_s']:.3f} s, GHN {row['ghn_s']:.3f} s, total {row['total_s']:.3f} s "
              f"(median {row['total_median_s']:.3f} s), CLI {row['cli_s']:.2f} s, imports {row['imports_s']:.2f} s",
              file=sys.stderr)
    out = output_stem(args, "predict")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(rows, env))
    print(_markdown(rows, env))


if __name__ == "__main__":
    main()
