"""``ghnorth experiment run|report`` through the CLI, with fine-tuning replaced by an instant fake."""

from __future__ import annotations

import csv
import json

import pytest

from ghnorth_cli.experiment.executor import FinetuneExecutor
from test_experiment import FakeExecutor  # tests/ is on sys.path (rootdir-relative imports)

GRID = ["--grid", "opt=sgd lr=0.01,0.1 epochs=2", "--grid", "opt=adamw lr=0.001 epochs=2"]


@pytest.fixture
def fake_finetune(monkeypatch):
    """Every run the CLI starts goes to a FakeExecutor (returned, to count calls)."""
    fake = FakeExecutor()
    monkeypatch.setattr(FinetuneExecutor, "__call__", lambda self, run, paths: fake(run, paths))
    monkeypatch.setattr(FinetuneExecutor, "preflight", lambda self, runs: None)
    return fake


def run_cli(cli, out, *extra):
    return cli("experiment", "run", "-o", out, "-a", "resnet18", "--data", "fashion-mnist", "--labels-per-class",
               "10", "--val-size", "100", "--init", "default", "--init", "orth", *GRID, "--seeds", "2", *extra)


def test_run_prints_the_table_and_writes_every_report_file(cli, tmp_path, fake_finetune):
    result = run_cli(cli, tmp_path / "exp", "--plot")
    assert result.exit_code == 0, result.stderr
    assert len(fake_finetune.calls) == 2 * 3 * 2
    lines = result.stdout.splitlines()
    assert "| init | resnet18 |" in lines and "| # params | 11.0M |" in lines
    assert any(line.startswith("| orth | ") and "±" in line for line in lines)
    assert "12 finished runs" in result.stderr
    for name in ("report.md", "report.csv", "report.json", "bars.png", "curves.png", "experiment.json"):
        assert (tmp_path / "exp" / name).stat().st_size > 0
    with open(tmp_path / "exp" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and sum(r["selected"] == "True" for r in rows) == 2 * 2
    config = json.loads(next((tmp_path / "exp" / "runs").glob("*/config.json")).read_text())
    assert set(config) >= {"run_id", "config_id", "arch", "init", "hparams", "seed", "data"}


def test_rerun_resumes_and_shards_merge(cli, tmp_path, fake_finetune):
    for i in (1, 2):
        assert run_cli(cli, tmp_path / f"s{i}", "--shard", f"{i}/2").exit_code == 0
    assert len(fake_finetune.calls) == 12
    assert run_cli(cli, tmp_path / "s1", "--shard", "1/2").exit_code == 0
    assert len(fake_finetune.calls) == 12  # nothing new to run
    merged = cli("experiment", "report", tmp_path / "s1", tmp_path / "s2", "-o", tmp_path / "merged", "--json")
    assert merged.exit_code == 0, merged.stderr
    report = json.loads(merged.stdout)
    assert len(report["runs"]) == 12 and len(report["selections"]) == 2
    assert (tmp_path / "merged" / "report.md").is_file()


def test_dry_run_counts_the_paper_grid(cli, tmp_path):
    result = cli("experiment", "run", "-o", tmp_path / "t1", "--preset", "table1", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    runs = json.loads(result.stdout)
    assert len(runs) == 2 * 5 * (5 + 4) * 4 * 5 * 2 * 3  # archs, inits, lrs, epochs, wds, sizes, seeds
    assert {r["hparams"]["batch_size"] for r in runs if r["arch"] == "convnext_base"} == {48}
    assert {r["hparams"]["lr"] for r in runs if r["hparams"]["opt"] == "adamw"} == {0.004, 0.001, 0.0004, 0.0001}
    assert not (tmp_path / "t1").exists()
    recipes = cli("experiment", "run", "-o", tmp_path / "t2", "--preset", "table1-recipes", "--dry-run", "--json")
    assert len(json.loads(recipes.stdout)) == 2 * 5 * 3


@pytest.mark.parametrize("args, message", [
    (["--shard", "0/2"], "--shard"),
    (["--grid", "speed=1"], "unknown grid option"),
    (["--set", "lr"], "--set"),
    (["--seeds", "x"], "--seeds"),
    (["--init", "ghn-orth:somegnh", "--dry-run", "-a", "resnet18"], None),
])
def test_errors_are_one_line(cli, tmp_path, args, message):
    result = cli("experiment", "run", "-o", tmp_path / "e", "--data", "fashion-mnist", "-a", "resnet18",
                 "--init", "default", *args)
    if message is None:  # planning a GHN init does not need the GHN yet
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 1
    assert result.stderr.startswith("ghnorth: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_report_of_a_folder_without_runs_fails_cleanly(cli, tmp_path):
    result = cli("experiment", "report", tmp_path)
    assert result.exit_code == 1 and "not an experiment directory" in result.stderr


def test_setup_problems_stop_before_any_run(cli, tmp_path):
    result = cli("experiment", "run", "-o", tmp_path / "e", "--data", f"imagefolder:{tmp_path / 'nowhere'}",
                 "-a", "timm:test_resnet", "--init", "default", "--seeds", "1")
    assert result.exit_code == 1 and result.stderr.splitlines()[-1].startswith("ghnorth: error: image folder")
    assert not list((tmp_path / "e" / "runs").glob("*/metrics.json"))
    result = cli("experiment", "run", "-o", tmp_path / "e", "--data", "fashion-mnist", "-a", "timm:test_resnet",
                 "--init", "ghn-orth:ghn2-cifar10", "--seeds", "1")
    assert result.exit_code == 1 and "--orth-from" in result.stderr
