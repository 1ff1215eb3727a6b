"""Collecting finished runs from experiment directories, selecting configurations, writing tables.

Selection follows the paper: for every (architecture, init), the configuration with the best mean
validation accuracy over its seeds wins (a configuration with a failed run is never chosen; ties go
to the smaller config id), and its test accuracy over the seeds is reported as mean ± sample std.
``at="final"`` reads the numbers after the last epoch, ``at="best"`` those at the best-validation epoch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.experiment.grid import GRID_KEYS
from ghnorth_cli.experiment.runner import CONFIG_FILE, LOG_FILE, METRICS_FILE, RUNS_DIR, read_json

log = logging.getLogger(__name__)

AT_CHOICES = ("final", "best")


@dataclass(frozen=True)
class RunRecord:
    """A finished run as read back from its directory."""

    run_id: str
    config_id: str
    arch: str
    init: str
    hparams: dict[str, Any]
    seed: int
    data: dict[str, Any]
    metrics: dict[str, Any]
    dir: Path

    @property
    def failed(self) -> bool:
        return "failed" in self.metrics

    def acc(self, split: str, *, at: str) -> float | None:
        numbers = self.metrics.get(at) or {}
        value = numbers.get(f"{split}_acc")
        return None if value is None else float(value)

    def curve(self) -> list[dict[str, Any]]:
        """The per-epoch records of log.jsonl (empty when absent)."""
        path = self.dir / LOG_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class Selection:
    """The winning configuration of one (arch, init) and its numbers over seeds."""

    arch: str
    init: str
    config_id: str | None
    hparams: dict[str, Any]
    val_mean: float | None
    test_mean: float | None
    test_std: float | None
    test_values: list[float]
    seeds: list[int]
    run_ids: list[str]
    candidates: int
    num_params: int | None

    def cell(self) -> str:
        if self.test_mean is None:
            return "failed"
        return f"{self.test_mean:.2f} ± {self.test_std:.2f}"


@dataclass
class Report:
    records: list[RunRecord]
    selections: list[Selection]
    archs: list[str]
    inits: list[str]
    at: str
    data: dict[str, Any] | None = None

    def selection(self, arch: str, init: str) -> Selection | None:
        return next((s for s in self.selections if s.arch == arch and s.init == init), None)


def _experiment_order(folder: Path) -> tuple[list[str], list[str]]:
    path = folder / "experiment.json"
    if not path.is_file():
        return [], []
    definition = read_json(path)
    return list(definition.get("archs", [])), [i["label"] for i in definition.get("inits", [])]


def _read_record(run_dir: Path) -> RunRecord | None:
    if not (run_dir / METRICS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        return None
    config = read_json(run_dir / CONFIG_FILE)
    return RunRecord(config["run_id"], config["config_id"], config["arch"], config["init"]["label"],
                     config["hparams"], int(config["seed"]), config["data"], read_json(run_dir / METRICS_FILE),
                     run_dir)


def collect_runs(folders: Iterable[str | Path]) -> tuple[list[RunRecord], list[str], list[str]]:
    """Finished runs of experiment directories (a run found twice counts once), archs and inits in order."""
    records: dict[str, RunRecord] = {}
    archs: list[str] = []
    inits: list[str] = []
    for folder in map(Path, folders):
        if not (folder / RUNS_DIR).is_dir():
            raise GhnorthError(f"{folder} is not an experiment directory (no {RUNS_DIR}/ in it)")
        more_archs, more_inits = _experiment_order(folder)
        archs += [a for a in more_archs if a not in archs]
        inits += [i for i in more_inits if i not in inits]
        for run_dir in sorted(p for p in (folder / RUNS_DIR).iterdir() if p.is_dir()):
            record = _read_record(run_dir)
            if record is not None:
                records.setdefault(record.run_id, record)
    found = list(records.values())
    archs += [r.arch for r in found if r.arch not in archs]
    inits += [r.init for r in found if r.init not in inits]
    return found, list(dict.fromkeys(archs)), list(dict.fromkeys(inits))


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _select_one(arch: str, init: str, records: list[RunRecord], *, at: str) -> Selection:
    configs: dict[str, list[RunRecord]] = {}
    for r in records:
        configs.setdefault(r.config_id, []).append(r)
    scored = []
    for config_id, runs in configs.items():
        vals = [r.acc("val", at=at) for r in runs]
        if any(r.failed for r in runs) or any(v is None for v in vals):
            continue
        scored.append((statistics.fmean(vals), config_id))
    params = next((r.metrics.get("num_params") for r in records if r.metrics.get("num_params")), None)
    if not scored:
        return Selection(arch, init, None, {}, None, None, None, [], [], [], len(configs), params)
    val_mean, best = min(scored, key=lambda s: (-s[0], s[1]))
    runs = sorted(configs[best], key=lambda r: r.seed)
    tests = [r.acc("test", at=at) for r in runs]
    tests = [t for t in tests if t is not None]
    return Selection(arch, init, best, dict(runs[0].hparams), val_mean,
                     statistics.fmean(tests) if tests else None, _std(tests) if tests else None, tests,
                     [r.seed for r in runs], [r.run_id for r in runs], len(configs), params)


def build_report(folders: Iterable[str | Path], *, at: str = "final") -> Report:
    """Read every finished run under ``folders`` and select one configuration per (arch, init)."""
    if at not in AT_CHOICES:
        raise GhnorthError(f"--at must be one of {', '.join(AT_CHOICES)}, got {at!r}")
    records, archs, inits = collect_runs(folders)
    datas = {json.dumps(r.data, sort_keys=True) for r in records}
    if len(datas) > 1:
        shown = sorted(datas)
        more = f" and {len(shown) - 2} more" if len(shown) > 2 else ""
        raise GhnorthError(f"these runs used {len(shown)} different data settings and cannot share a table: "
                           f"{' vs '.join(shown[:2])}{more}")
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.arch, r.init), []).append(r)
    selections = [_select_one(a, i, groups[(a, i)], at=at) for a in archs for i in inits if (a, i) in groups]
    data = records[0].data if records else None
    return Report(records, selections, [a for a in archs if any(s.arch == a for s in selections)],
                  [i for i in inits if any(s.init == i for s in selections)], at, data)


def format_params(count: int | None) -> str:
    if not count:
        return "?"
    return f"{count / 1e6:.1f}M" if count >= 1e5 else f"{count / 1e3:.1f}K"


def hparams_text(hparams: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(hparams.items())) or "(defaults)"


def markdown_table(report: Report) -> str:
    """Rows: inits; columns: architectures; a parameter-count row first; cells: test mean ± std."""
    head = ["init", *report.archs]
    params = ["# params", *(format_params(next((s.num_params for s in report.selections if s.arch == a), None))
                            for a in report.archs)]
    rows = [head, ["---"] * len(head), params]
    for init in report.inits:
        cells = [(report.selection(a, init).cell() if report.selection(a, init) else "–") for a in report.archs]
        rows.append([init, *cells])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def markdown_selected(report: Report) -> str:
    """Which configuration won each cell, its mean validation accuracy, and the runs behind it."""
    rows = ["| arch | init | configuration | val (mean) | seeds | configs tried |", "| --- | --- | --- | --- | --- | --- |"]
    for s in report.selections:
        val = "–" if s.val_mean is None else f"{s.val_mean:.2f}"
        rows.append(f"| {s.arch} | {s.init} | {hparams_text(s.hparams)} | {val} | {len(s.seeds)} | {s.candidates} |")
    return "\n".join(rows) + "\n"


def markdown_report(report: Report) -> str:
    if report.data is None:
        return "No finished runs yet.\n"
    data = report.data
    title = (f"Test accuracy (%) at the {report.at} epoch, mean ± std over seeds; data {data.get('data')}, "
             f"{data.get('labels_per_class') or 'all'} labels per class")
    return f"{title}\n\n{markdown_table(report)}\nSelected by mean validation accuracy:\n\n{markdown_selected(report)}"


def _csv_row(r: RunRecord, report: Report, hparam_keys: list[str]) -> dict[str, Any]:
    chosen = report.selection(r.arch, r.init)
    row: dict[str, Any] = {"run_id": r.run_id, "arch": r.arch, "init": r.init, "config_id": r.config_id,
                           "seed": r.seed, "status": "failed" if r.failed else "done",
                           "selected": bool(chosen and chosen.config_id == r.config_id)}
    row.update({k: r.hparams.get(k) for k in hparam_keys})
    for at in AT_CHOICES:
        for split in ("val", "test"):
            row[f"{at}_{split}_acc"] = r.acc(split, at=at)
    row.update(best_epoch=r.metrics.get("best_epoch"), epochs=r.metrics.get("epochs"),
               num_params=r.metrics.get("num_params"), run_seconds=r.metrics.get("run_seconds"),
               failed=r.metrics.get("failed"), dir=str(r.dir))
    return row


def run_rows(report: Report) -> list[dict[str, Any]]:
    keys = [k for k in GRID_KEYS if any(k in r.hparams for r in report.records)]
    order = sorted(report.records, key=lambda r: (r.arch, r.init, r.config_id, r.seed))
    return [_csv_row(r, report, keys) for r in order]


def csv_text(report: Report) -> str:
    rows = run_rows(report)
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def json_report(report: Report) -> dict[str, Any]:
    return {"at": report.at, "data": report.data, "archs": report.archs, "inits": report.inits,
            "selections": [asdict(s) for s in report.selections], "runs": run_rows(report)}


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """report.md, report.csv and report.json in ``out_dir`` (atomically); returns their paths."""
    from ghnorth_cli.checkpoint import write_bytes_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {out / "report.md": markdown_report(report), out / "report.csv": csv_text(report),
             out / "report.json": json.dumps(json_report(report), indent=2) + "\n"}
    for path, text in files.items():
        write_bytes_atomic(path, text.encode())
    return list(files)
