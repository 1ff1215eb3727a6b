"""The scale benchmarks run: bench_experiment_jobs.py on the CPU, and gpu_checks.sh calls it with real options."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from finetune_helpers import make_fashion_dir

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_experiment_jobs", BENCH / "bench_experiment_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_checks_is_valid_bash_and_calls_the_bench_with_its_own_options():
    script = BENCH / "gpu_checks.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text().replace("\\\n", " ")
    calls = re.findall(r"benchmarks/bench_experiment_jobs\.py([^|\n]*)", text)
    assert calls, "gpu_checks.sh no longer measures packed runs"
    for call in calls:
        words = [w for w in shlex.split(call) if not re.match(r"\d?>", w)]  # drop redirections
        args = bench_module().parser().parse_args(words)  # exits on an unknown option
        assert args.device == "cuda" and len(args.jobs.split(",")) >= 2


@pytest.mark.slow
def test_bench_compares_job_counts_on_the_cpu(tmp_path):
    data = make_fashion_dir(tmp_path / "fm", num_classes=3, train_per_class=8, test_per_class=2)
    out = tmp_path / "jobs.md"
    bench_module().main(["--jobs", "1,2", "--runs", "2", "--data-dir", str(data), "--labels-per-class", "4",
                         "--epochs", "1", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if re.match(r"\| [12] \|", line)]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows), out.read_text()
