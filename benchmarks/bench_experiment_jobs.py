"""Experiment throughput against the number of runs at once: ``experiment run --jobs J`` for each J.

Usage (from the repository root):

    python benchmarks/bench_experiment_jobs.py --jobs 1,2                       # this CPU machine
    python benchmarks/bench_experiment_jobs.py --device cuda --jobs 1,4 --runs-per-gpu 4 \\
        --arch resnet18 --runs 8 --labels-per-class 100      # K packed few-shot runs on one GPU

Each setting runs the same small grid (``--runs`` seeds of one configuration, a fresh experiment
directory each time) through ``python -m ghnorth_cli experiment run`` and reports its wall time,
runs per hour, the 1-minute load average before and after (the machine may be shared: say so with
the numbers), and whether the report's table is identical to that of the first setting (it must be:
every run uses ``--threads`` threads whatever the job count).

Prints a Markdown section on stdout; ``--out FILE`` also writes it there (nothing is overwritten
unless asked).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", default="1,2", help="Comma-separated --jobs values to compare (default 1,2).")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    p.add_argument("--runs-per-gpu", type=int, default=0,
                   help="With CUDA: --runs-per-gpu for each setting (0: the setting's --jobs, i.e. all on one GPU).")
    p.add_argument("--runs", type=int, default=4, help="Runs in the grid: seeds of one configuration (default 4).")
    p.add_argument("--arch", default="timm:test_resnet", help="Architecture (default timm:test_resnet, 0.4M).")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--val-size", default="500", help="Validation images (a count or a fraction; default 500).")
    p.add_argument("--img-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="--threads of each run (default 1).")
    p.add_argument("--out", default=None, help="Also write the Markdown here.")
    return p


def experiment_command(args: argparse.Namespace, out_dir: Path, jobs: int) -> list[str]:
    command = [sys.executable, "-m", "ghnorth_cli", "-q", "experiment", "run", "-o", str(out_dir),
               "-a", args.arch, "--data", args.data, "--labels-per-class", str(args.labels_per_class),
               "--val-size", args.val_size, "--init", "default", "--seeds", str(args.runs),
               "--set", f"img_size={args.img_size}", "--set", f"epochs={args.epochs}",
               "--device", args.device, "--jobs", str(jobs), "--threads", str(args.threads)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.device.startswith("cuda"):
        command += ["--runs-per-gpu", str(args.runs_per_gpu or jobs)]
    return command


def measure(args: argparse.Namespace, jobs: int, folder: Path) -> dict:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(experiment_command(args, folder, jobs), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"--jobs {jobs} failed:\n{done.stderr[-2000:]}")
    return {"jobs": jobs, "seconds": seconds, "load_before": load_before, "load_after": os.getloadavg()[0],
            "table": (folder / "report.md").read_text()}


def markdown(args: argparse.Namespace, results: list[dict]) -> str:
    first = results[0]
    lines = [
        f"## experiment run --jobs, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {args.device}; "
        f"grid: {args.runs} runs of {args.arch} on {args.data} ({args.labels_per_class} labels per class, "
        f"{args.img_size} px, {args.epochs} epochs), --threads {args.threads} per run.",
        "",
        "| --jobs | wall time (s) | runs / hour | speed-up | load before / after | same table as first |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['jobs']} | {r['seconds']:.1f} | {3600 * args.runs / r['seconds']:.0f} | "
                     f"{first['seconds'] / r['seconds']:.2f}x | {r['load_before']:.1f} / {r['load_after']:.1f} | "
                     f"{'yes' if r['table'] == first['table'] else 'NO'} |")
    command = " ".join(experiment_command(args, Path("DIR"), first["jobs"])[1:])
    lines += ["", f"Command of the first row (the others change --jobs): `python {command}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = [int(j) for j in args.jobs.split(",") if j.strip()]
    with tempfile.TemporaryDirectory(prefix="ghnorth-bench-jobs-") as tmp:
        results = [measure(args, jobs, Path(tmp) / f"{i}-jobs{jobs}") for i, jobs in enumerate(settings)]
    text = markdown(args, results)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
