"""ghnorth experiment: grids, run ids, selection, resume and shards with a fake (instant) executor."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.experiment import (
    DataSettings,
    Experiment,
    build_report,
    expand,
    markdown_report,
    parse_grid,
    parse_grids,
    parse_inits,
    parse_shard,
    plan_runs,
    run_experiment,
    select_shard,
)
from ghnorth_cli.experiment.initspec import InitSpec, OrthSettings, parse_orth_from
from ghnorth_cli.experiment.report import csv_text, json_report

DATA = DataSettings("fashion-mnist", labels_per_class=10, val_size=100)

# Validation accuracy of a configuration: the best lr differs per init, so selection matters.
BEST_LR = {"default": 0.01, "orth": 0.1}
SEED_NOISE = {0: -1.0, 1: 0.0, 2: 1.5}


def fake_accuracy(init: str, lr: float, seed: int) -> float:
    return 80.0 - 100 * abs(lr - BEST_LR.get(init, 0.05)) + SEED_NOISE.get(seed, 0.0)


class FakeExecutor:
    """Metrics as a pure function of the run; writes a two-epoch log; records what it ran."""

    def __init__(self, *, fail: set[str] = frozenset(), stop_after: int | None = None):
        self.calls: list[str] = []
        self.fail = fail
        self.stop_after = stop_after

    def __call__(self, run, paths):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(run.run_id)
        if run.run_id in self.fail:
            raise GhnorthError("loss is nan")
        val = fake_accuracy(run.init.label, run.hparams["lr"], run.seed)
        paths.log.write_text("".join(json.dumps({"epoch": e, "val_acc": val - 5 / e}) + "\n" for e in (1, 2)))
        return {"final": {"val_acc": val, "test_acc": val - 2}, "best": {"val_acc": val + 1, "test_acc": val - 1},
                "best_epoch": 2, "epochs": 2, "num_params": 11_000_000}


def experiment(**changes) -> Experiment:
    values = dict(archs=("resnet18",), inits=tuple(parse_inits(["default,orth"])), data=DATA,
                  grids=tuple(parse_grids(["lr=0.01,0.1 epochs=2"])), seeds=(0, 1, 2))
    return Experiment(**{**values, **changes})


def run_all(exp: Experiment, out: Path, executor=None, **kwargs):
    executor = executor or FakeExecutor()
    outcomes = run_experiment(exp, plan_runs(exp), out_dir=out, executor=executor, **kwargs)
    return executor, outcomes


# --- grids ---------------------------------------------------------------------------------------------


def test_grid_union_expresses_optimizer_specific_learning_rates():
    grids = parse_grids(["opt=sgd lr=0.025,0.01 epochs=50,100", "opt=adamw lr=0.004"])
    combos = expand(grids)
    assert len(combos) == 2 * 2 + 1
    assert {c["opt"] for c in combos if c["lr"] == 0.004} == {"adamw"}
    assert {"epochs": 100, "lr": 0.01, "opt": "sgd"} in combos
    assert all(isinstance(c["epochs"], int) for c in combos if "epochs" in c)


def test_grid_parses_aliases_types_and_drops_repeats():
    assert parse_grid("batch-size=96 clip_grad=none,5 opt=SGD") == {
        "batch_size": (96,), "clip_grad": (None, 5.0), "opt": ("sgd",)}
    assert expand([{"lr": (0.1,)}, {"lr": (0.1,)}]) == [{"lr": 0.1}]
    assert expand([]) == [{}]


@pytest.mark.parametrize("text, message", [
    ("learning=0.1", "unknown grid option"),
    ("lr=fast", "bad value"),
    ("opt=rmsprop", "bad value"),
    ("epochs=1.5", "bad value"),
    ("lr", "KEY=V1"),
    ("lr=0.1 lr=0.2", "twice"),
])
def test_grid_errors_are_clear(text, message):
    with pytest.raises(GhnorthError, match=message):
        parse_grid(text)


def test_grid_file_is_a_list_of_grids(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps([{"opt": "sgd", "lr": [0.1, 0.01]}, {"opt": "adamw", "lr": 0.001}]))
    assert len(expand(parse_grids([f"@{path}"]))) == 3
    path.write_text("{not json")
    with pytest.raises(GhnorthError, match="not valid JSON"):
        parse_grids([f"@{path}"])


# --- inits, ids, shards --------------------------------------------------------------------------------


def test_init_specs(tmp_path):
    ckpt = tmp_path / "mine.safetensors"
    ckpt.write_bytes(b"x")
    specs = parse_inits(["default,orth", "ghn-orth:ghn2-imagenet", str(ckpt), "orth"])
    assert [s.label for s in specs] == ["default", "orth", "ghn-orth:ghn2-imagenet", "ckpt:mine"]
    assert specs[3].kind == "checkpoint"
    with pytest.raises(GhnorthError, match="neither"):
        parse_inits(["random"])
    with pytest.raises(GhnorthError, match="name a GHN"):
        parse_inits(["ghn:"])


def test_orth_settings_per_arch():
    assert OrthSettings().for_arch("resnet50")["orth_from"] == 37  # the published preset for the arch
    default, per_arch = parse_orth_from(["8", "timm:convnext_tiny=20"])
    orth = OrthSettings(beta=1e-4, orth_from=default, orth_from_per_arch=per_arch)
    assert orth.for_arch("resnet18") == {"preset": None, "beta": 1e-4, "orth_from": 8, "noise_layers": "all"}
    assert orth.for_arch("convnext_tiny")["orth_from"] == 20
    with pytest.raises(GhnorthError, match="--orth-from"):
        OrthSettings().for_arch("resnet18")


def test_run_ids_are_stable_readable_and_shared_across_seeds():
    runs = plan_runs(experiment())
    assert len(runs) == 2 * 2 * 3
    again = plan_runs(experiment())
    assert [r.run_id for r in runs] == [r.run_id for r in again]
    first = runs[0]
    assert first.run_id.startswith("resnet18-default-") and first.run_id.endswith("-s0")
    assert len({r.config_id for r in runs if r.init.label == "default" and r.hparams["lr"] == 0.01}) == 1
    assert len({r.run_id for r in runs}) == len(runs)
    other_data = plan_runs(experiment(data=DataSettings("fashion-mnist", labels_per_class=20, val_size=100)))
    assert not {r.run_id for r in runs} & {r.run_id for r in other_data}


def test_fixed_and_per_arch_options_are_overridden_by_the_grid():
    exp = experiment(archs=("resnet18", "resnet50"), fixed={"batch_size": 32, "epochs": 9},
                     per_arch={"resnet50": {"batch_size": 96}})
    configs = {arch: exp.configurations(arch) for arch in exp.archs}
    assert all(c["batch_size"] == 32 and c["epochs"] == 2 for c in configs["resnet18"])
    assert all(c["batch_size"] == 96 for c in configs["resnet50"])


def test_shards_partition_the_plan():
    runs = plan_runs(experiment())
    shards = [select_shard(runs, index=i, count=5) for i in range(1, 6)]
    ids = [r.run_id for shard in shards for r in shard]
    assert sorted(ids) == sorted(r.run_id for r in runs)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(GhnorthError, match="--shard"):
            parse_shard(bad)


# --- selection -----------------------------------------------------------------------------------------


def test_selection_picks_the_best_mean_validation_configuration(tmp_path):
    run_all(experiment(), tmp_path)
    report = build_report([tmp_path])
    for init, lr in BEST_LR.items():
        chosen = report.selection("resnet18", init)
        assert chosen.hparams["lr"] == lr and chosen.candidates == 2
        expected = [fake_accuracy(init, lr, s) - 2 for s in (0, 1, 2)]
        assert chosen.test_values == pytest.approx(expected)
        assert chosen.test_mean == pytest.approx(statistics.fmean(expected))
        assert chosen.test_std == pytest.approx(statistics.stdev(expected))
    table = markdown_report(report)
    assert "| init | resnet18 |" in table and "| # params | 11.0M |" in table
    assert f"| orth | {report.selection('resnet18', 'orth').cell()} |" in table


def test_selection_uses_the_mean_not_one_lucky_seed(tmp_path):
    # lr=0.1 wins seed 2 by far for default, but lr=0.01 has the better mean.
    exp = experiment(inits=(InitSpec("default"),))
    SEED_NOISE_LUCKY = {("default", 0.1, 2): 9.0}

    class Lucky(FakeExecutor):
        def __call__(self, run, paths):
            metrics = super().__call__(run, paths)
            bump = SEED_NOISE_LUCKY.get(("default", run.hparams["lr"], run.seed), 0.0)
            metrics["final"] = {k: v + bump for k, v in metrics["final"].items()}
            return metrics

    run_all(exp, tmp_path, Lucky())
    assert build_report([tmp_path]).selection("resnet18", "default").hparams["lr"] == 0.01


def test_best_epoch_numbers_with_at_best(tmp_path):
    run_all(experiment(), tmp_path)
    chosen = build_report([tmp_path], at="best").selection("resnet18", "default")
    assert chosen.test_values == pytest.approx([fake_accuracy("default", 0.01, s) - 1 for s in (0, 1, 2)])


def test_failed_runs_are_recorded_and_their_configuration_never_wins(tmp_path):
    exp = experiment()
    winner = next(r for r in plan_runs(exp) if r.init.label == "orth" and r.hparams["lr"] == 0.1)
    executor, outcomes = run_all(exp, tmp_path, FakeExecutor(fail={winner.run_id}))
    assert [o.status for o in outcomes].count("failed") == 1
    report = build_report([tmp_path])
    assert report.selection("resnet18", "orth").hparams["lr"] == 0.01
    assert "failed" in csv_text(report)
    executor, _ = run_all(exp, tmp_path, retry_failed=True)
    assert executor.calls == [winner.run_id]
    assert build_report([tmp_path]).selection("resnet18", "orth").hparams["lr"] == 0.1


# --- resume and shards ---------------------------------------------------------------------------------


def test_resume_skips_finished_runs(tmp_path):
    exp = experiment()
    with pytest.raises(KeyboardInterrupt):
        run_all(exp, tmp_path, FakeExecutor(stop_after=5))
    executor, outcomes = run_all(exp, tmp_path)
    assert len(executor.calls) == len(outcomes) - 5
    assert [o.status for o in outcomes].count("skipped") == 5
    executor, outcomes = run_all(exp, tmp_path)
    assert executor.calls == [] and {o.status for o in outcomes} == {"skipped"}
    # A run whose metrics are gone (interrupted mid-run) runs again; a bigger grid adds only new runs.
    victim = outcomes[3].run
    (tmp_path / "runs" / victim.run_id / "metrics.json").unlink()
    executor, _ = run_all(exp, tmp_path)
    assert executor.calls == [victim.run_id]
    executor, _ = run_all(experiment(grids=tuple(parse_grids(["lr=0.01,0.1,0.05 epochs=2"]))), tmp_path)
    assert len(executor.calls) == 2 * 3


def test_preflight_sees_only_the_runs_still_to_do(tmp_path):
    exp = experiment()
    run_experiment(exp, plan_runs(exp)[:4], out_dir=tmp_path, executor=FakeExecutor())
    seen = []
    run_experiment(exp, plan_runs(exp), out_dir=tmp_path, executor=FakeExecutor(), preflight=seen.extend)
    assert [r.run_id for r in seen] == [r.run_id for r in plan_runs(exp)[4:]]


def test_shards_in_separate_directories_merge_to_the_single_run_report(tmp_path):
    exp = experiment(archs=("resnet18", "resnet50"))
    run_all(exp, tmp_path / "all")
    folders = []
    for i in (1, 2, 3):
        folder = tmp_path / f"shard{i}"
        runs = select_shard(plan_runs(exp), index=i, count=3)
        run_experiment(exp, runs, out_dir=folder, executor=FakeExecutor())
        folders.append(folder)
    single, merged = build_report([tmp_path / "all"]), build_report(folders)
    assert markdown_report(merged) == markdown_report(single)
    drop_paths = lambda rows: [{k: v for k, v in row.items() if k not in ("dir", "run_seconds")} for row in rows]  # noqa: E731
    assert drop_paths(json_report(merged)["runs"]) == drop_paths(json_report(single)["runs"])
    assert merged.archs == ["resnet18", "resnet50"] and merged.inits == ["default", "orth"]
    # The same runs found twice count once.
    assert len(build_report([*folders, tmp_path / "all"]).records) == len(single.records)


def test_report_refuses_mixed_data_and_non_experiment_folders(tmp_path):
    run_all(experiment(), tmp_path / "a")
    run_all(experiment(data=DataSettings("cifar10", labels_per_class=10, val_size=100)), tmp_path / "b")
    with pytest.raises(GhnorthError, match="different data"):
        build_report([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(GhnorthError, match="not an experiment directory"):
        build_report([tmp_path])
