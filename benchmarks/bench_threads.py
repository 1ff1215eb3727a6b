"""How many CPU threads should ghnorth use by default? Time commands at each thread count.

    python benchmarks/bench_threads.py                  # threads 1 and 2, idle and with a core busy
    python benchmarks/bench_threads.py --threads 1 2 4 --workloads predict finetune --repeats 2

Each workload is a real ``ghnorth`` command, run in a fresh process with ``OMP_NUM_THREADS=N``
(which every command follows when ``--threads`` is not given); the timed part starts after
torch, timm and the CLI are imported, so the numbers are the work itself:

* predict:    ``predict`` ConvNeXt-Base (bundled GHN, 32 px, 10 classes): model build, graph, GHN, write
* finetune:   ``finetune`` ResNet-18 on Fashion-MNIST, 5 images per class, 1 epoch, 100 test images
* train-ghn:  ``train-ghn`` 6 steps on Fashion-MNIST (tiny space, 2 architectures per step)
* experiment: ``experiment run`` one ResNet-18 run (default init, 1 epoch) on 10 classes of random
  32 px images (5 per class to train, 10 to test)

"busy" runs the same with one extra process spinning on a core (another user's job), which
is the common state of a shared machine. The load average before each measurement is
recorded with the results, since on a shared machine "idle" is rarely truly idle.
Results: a new ``results/threads-<time>.json`` and ``.md`` (``--update`` overwrites the
tracked ``results/threads.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import add_output_arguments, output_stem  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"


def workloads(tmp: str) -> dict[str, list[str]]:
    """CLI arguments of each workload; outputs go under ``tmp``."""
    return {
        "predict": ["predict", "--ghn", "ghn2-fmnist-tiny", "-a", "convnext_base", "--img-size", "32",
                    "--num-classes", "10", "-o", f"{tmp}/pred.safetensors"],
        "finetune": ["finetune", "--data", "fashion-mnist", "--data-dir", FMNIST, "-a", "resnet18", "--init", "default",
                     "--labels-per-class", "5", "--epochs", "1", "--batch-size", "50", "--test-size", "100",
                     "--img-size", "32", "--no-progress"],
        "train-ghn": ["train-ghn", "-o", f"{tmp}/ghn.safetensors", "--data-dir", FMNIST, "--steps", "6",
                      "--meta-batch", "2", "--batch-size", "32", "--log-every", "6", "--heldout", "2"],
        "experiment": ["experiment", "run", "-o", f"{tmp}/exp", "-a", "resnet18", "--init", "default", "--seeds", "1",
                       "--data", f"imagefolder:{_image_folder(tmp)}", "--labels-per-class", "5",
                       "--set", "epochs=1", "--set", "batch_size=50", "--set", "img_size=32"],
    }


def _image_folder(tmp: str, classes: int = 10, train: int = 6, test: int = 10) -> str:
    """A small random image dataset (``train/`` and ``test/``, 32 px) for the experiment workload."""
    import numpy as np
    from PIL import Image

    root = Path(tmp) / "images"
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(root)


_CHILD = """
import sys, time, json
import torch, timm  # imported before the clock starts
from ghnorth_cli.cli import app
args = json.loads(sys.argv[1])
start = time.perf_counter()
try:
    app(["-q", *args], standalone_mode=False)
finally:
    print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))
"""


def run_once(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spin() -> subprocess.Popen:
    """One process that keeps a core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])


def measure(names: list[str], threads: list[int], repeats: int, busy: bool) -> list[dict]:
    rows = []
    spinner = _spin() if busy else None
    try:
        for name in names:
            for n in threads:
                times, loads = [], []
                for _ in range(repeats):
                    with tempfile.TemporaryDirectory() as tmp:
                        loads.append(os.getloadavg()[0])
                        result = run_once(workloads(tmp)[name], n)
                    assert result["threads"] == n, result
                    times.append(result["seconds"])
                row = {"workload": name, "threads": n, "busy": busy, "best_s": min(times),
                       "median_s": statistics.median(times), "times_s": times, "load1_before": loads}
                rows.append(row)
                print(f"{name:<11} threads {n} {'busy' if busy else 'idle'}: {row['best_s']:.2f} s "
                      f"(load {loads[0]:.1f})", file=sys.stderr, flush=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return rows


def markdown(data: dict) -> str:
    env = data["env"]
    lines = ["# CPU threads: time of each command at each thread count", "",
             f"{env['time']}, {env['cpus']} CPUs ({env['cpu']}), torch {env['torch']}; load average "
             f"(1/5/15 min) before: {env['load']}; `uptime`: {env['uptime']}. "
             f"Best of {env['repeats']}; seconds after imports.", "",
             "| workload | machine | " + " | ".join(f"{n} thread{'s' * (n > 1)} (s)" for n in env["threads"])
             + " | slowest / fastest | load average before (1 min) |",
             "|---|---|" + "---:|" * (len(env["threads"]) + 2)]
    for workload in dict.fromkeys(r["workload"] for r in data["rows"]):
        for busy in (False, True):
            row = {r["threads"]: r for r in data["rows"] if r["workload"] == workload and r["busy"] == busy}
            if not row:
                continue
            best = [row[n]["best_s"] for n in env["threads"] if n in row]
            cells = " | ".join(f"{row[n]['best_s']:.2f}" if n in row else "" for n in env["threads"])
            loads = [x for r in row.values() for x in r["load1_before"]]
            lines.append(f"| {workload} | {'as found + one core busy' if busy else 'as found'} | {cells} | "
                         f"{max(best) / min(best):.2f} | {min(loads):.1f}-{max(loads):.1f} |")
    lines += ["", "\"as found\": the machine as it was (on a shared machine rarely idle: see the load "
              "column); \"+ one core busy\": with one more process spinning on a core. Every run's load "
              "average is in the JSON file beside this one.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", default=["predict", "finetune", "train-ghn", "experiment"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-busy", action="store_true", help="only the measurement without the spinning process")
    parser.add_argument("--render", type=Path, help="only rewrite the Markdown of an earlier JSON result")
    add_output_arguments(parser, "threads")
    args = parser.parse_args()
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return

    import torch

    env = {"time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
           "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
           "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "threads": args.threads, "repeats": args.repeats,
           "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    rows = measure(args.workloads, args.threads, args.repeats, busy=False)
    if not args.no_busy:
        rows += measure(args.workloads, args.threads, args.repeats, busy=True)
    data = {"env": env, "rows": rows}
    stem = output_stem(args, "threads")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))
    print(f"wrote {stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
