"""``ghnorth experiment``: compare initializations over architectures, a hyper-parameter grid and seeds.

``experiment run`` plans archs x inits x grid x seeds, fine-tunes every run not finished yet (each in
DIR/runs/<run_id>/), then writes and prints the report; ``experiment report`` merges the runs of one or
more experiment directories (e.g. shards run on several machines) into one report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import JsonOption, device_name, finite_float, seed_value

_logger = logging.getLogger(__name__)

experiment_app = typer.Typer(
    name="experiment", no_args_is_help=True, rich_markup_mode=None,
    help="Compare initializations like the paper's Table 1: grid search per init, mean ± std over seeds.",
)
app.add_typer(experiment_app, name="experiment")

ListOption = Optional[list[str]]
AtOption = Annotated[
    str, typer.Option("--at", metavar="final|best", help="Numbers after the last epoch (final) or at the "
                      "best-validation epoch (best).")
]
PlotOption = Annotated[bool, typer.Option("--plot", help="Also draw bars.png (test accuracy, error bars) and "
                                          "curves.png (validation accuracy per epoch) next to the report.")]


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _seed_list(text: str | None, default: int) -> tuple[int, ...]:
    from ghnorth_cli.errors import GhnorthError

    try:
        if text is None:
            return tuple(range(default))
        if "," in text:
            return tuple(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
        count = int(text)
    except ValueError:
        raise GhnorthError(f"--seeds {text!r}: give a count (3) or a list (0,1,2)") from None
    if count < 1:
        raise GhnorthError("--seeds must be at least 1")
    return tuple(range(count))


def _fixed_options(values: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``--set KEY=VALUE`` (all archs) and ``--set ARCH:KEY=VALUE`` (one arch)."""
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.experiment.grid import canonical_key, parse_value

    fixed: dict[str, Any] = {}
    per_arch: dict[str, dict[str, Any]] = {}
    for value in values:
        target, sep, raw = value.partition("=")
        if not sep:
            raise GhnorthError(f"--set {value!r}: expected KEY=VALUE or ARCH:KEY=VALUE")
        arch, _, key = target.rpartition(":") if target.count(":") else ("", "", target)
        name = canonical_key(key)
        (per_arch.setdefault(arch, {}) if arch else fixed)[name] = parse_value(name, raw)
    return fixed, per_arch


def _build_experiment(*, preset: str | None, archs: list[str], inits: list[str], grids: list[str],
                      seeds: str | None, data: dict[str, Any], sets: list[str], orth) -> Any:
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.experiment import DataSettings, Experiment, parse_grids, parse_inits
    from ghnorth_cli.experiment.presets import get_preset

    p = get_preset(preset) if preset else None
    data_name = data["data"] or (p.data if p else None)
    if data_name is None:
        raise GhnorthError("--data is required (or --preset)")
    labels = data["labels_per_class"] if data["labels_per_class"] is not None else (p.labels_per_class if p else None)
    fixed, per_arch = _fixed_options(sets)
    arch_overrides = {a: {**(p.per_arch.get(a, {}) if p else {}), **per_arch.get(a, {})}
                      for a in {*(p.per_arch if p else {}), *per_arch}}
    return Experiment(
        archs=tuple(archs or (p.archs if p else ())),
        inits=tuple(parse_inits(inits or (list(p.inits) if p else []))),
        data=DataSettings(data_name, labels, data["val_size"], data["data_seed"]),
        grids=tuple(parse_grids(grids)) if grids else (p.grids if p else ()),
        seeds=_seed_list(seeds, p.seeds if p else 3),
        fixed={**(p.fixed if p else {}), **fixed}, per_arch=arch_overrides, orth=orth,
    )


def _init_applies(init, arch: str) -> bool:
    """A checkpoint init serves only the architecture it holds (files without metadata serve all)."""
    if init.kind != "checkpoint":
        return True
    from ghnorth_cli.metadata import read_metadata

    model = read_metadata(init.source).get("ghnorth.model")
    if model is None:
        return True
    held = model.get("name")
    if held != arch.split(":")[-1]:
        _logger.warning("warning: --init %s holds %s: not used for --arch %s", init.source, held, arch)
        return False
    return True


def _print_report(folders: list[Path], *, out_dir: Path, at: str, plot: bool, as_json: bool) -> None:
    from ghnorth_cli.experiment.report import build_report, json_report, markdown_report, write_report

    report = build_report(folders, at=at)
    if not report.records:
        _logger.warning("warning: no finished runs in %s yet", ", ".join(map(str, folders)))
    written = write_report(report, out_dir)
    if plot:
        from ghnorth_cli.experiment.plot import plot_bars, plot_curves

        for name, draw in (("bars.png", plot_bars), ("curves.png", plot_curves)):
            if draw(report, out_dir / name):
                written.append(out_dir / name)
            else:
                _logger.info("no finished runs to draw: %s not written", out_dir / name)
    _logger.info("%d finished runs; wrote %s", len(report.records), ", ".join(str(p) for p in written))
    if as_json:
        typer.echo(json.dumps(json_report(report), indent=2))
    else:
        typer.echo(markdown_report(report), nl=False)


def _dry_run(runs, *, as_json: bool) -> None:
    from ghnorth_cli.finetune.config import FinetuneConfig

    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in runs], indent=2))
    else:
        for r in runs:
            typer.echo(f"{r.run_id}\t" + " ".join(f"{k}={v}" for k, v in sorted(r.hparams.items())))
    epochs = sum(int(r.hparams.get("epochs", FinetuneConfig.epochs)) for r in runs)
    _logger.info("%d runs, %d epochs in all (%d configurations)", len(runs), epochs,
                 len({r.config_id for r in runs}))


@experiment_app.command("run")
def run_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Experiment directory (created; reused to resume).")],
    preset: Annotated[Optional[str], typer.Option("--preset", help="table1 (the paper's grid) or table1-recipes "
                      "(one published configuration per arch); explicit options override it.")] = None,
    arch: Annotated[ListOption, typer.Option("--arch", "-a", help="Architecture(s); repeat or comma-separate.")] = None,
    init: Annotated[ListOption, typer.Option("--init", help="Init(s): default, orth, pretrained, ghn:G, ghn-orth:G "
                    "(G a GHN name or file), weight-selection:T (T a larger model: a checkpoint file or a "
                    "pretrained model name) or a checkpoint file; repeat or comma-separate.")] = None,
    grid: Annotated[ListOption, typer.Option("--grid", help="Grid 'opt=sgd,adamw lr=0.01,0.005 ...'; several "
                    "--grid make a union (conditional grids); '@FILE.json' reads a list of grids.")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seed count (3: seeds 0,1,2) or list (0,5).")] = None,
    set_: Annotated[ListOption, typer.Option("--set", help="Fixed option for every run: KEY=VALUE, or "
                    "ARCH:KEY=VALUE for one arch (e.g. resnet50:batch_size=96). The grid overrides it.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset as in finetune: cifar10, cifar100, "
                    "fashion-mnist, imagefolder:PATH.")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Where the dataset is.")] = None,
    download: Annotated[bool, typer.Option("--download", help="Download CIFAR into --data-dir if missing (once, "
                        "before any run).")] = False,
    labels_per_class: Annotated[Optional[int], typer.Option("--labels-per-class", min=1, help="Few-shot "
                                "training set: this many labelled images per class (default: all).")] = None,
    val_size: Annotated[float, typer.Option("--val-size", parser=finite_float(min=0.0), metavar="FLOAT", help="Validation images held out of the training "
                        "set: a count or a fraction (the paper: 10%).")] = 0.1,
    data_seed: Annotated[int, typer.Option("--data-seed", parser=seed_value, metavar="INT", help="Seed of the few-shot and validation split.")] = 0,
    pp_preset: Annotated[Optional[str], typer.Option("--pp-preset", help="GHN-orth post-processing preset "
                         "(default: the published one for the arch, if any).")] = None,
    beta: Annotated[Optional[float], typer.Option("--beta", parser=finite_float(min=0.0), metavar="FLOAT", help="GHN-orth noise scale.")] = None,
    orth_from: Annotated[ListOption, typer.Option("--orth-from", metavar="[ARCH=]L",
                         help="GHN-orth: re-initialize layers L.. (per arch with ARCH=L).")] = None,
    noise_layers: Annotated[Optional[str], typer.Option("--noise-layers", metavar="all|from-orth",
                            help="GHN-orth: layers that get noise (as in postprocess).")] = None,
    shard: Annotated[str, typer.Option("--shard", metavar="I/N", help="Run every N-th run from the I-th (to split "
                     "a grid over machines that share no scheduler; merge with `experiment report`).")] = "1/1",
    device: Annotated[str, typer.Option("--device", parser=device_name, help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    executor_name: Annotated[str, typer.Option("--executor", metavar="local|ray|slurm",
                             help="Where runs execute: local processes, Ray tasks, or one Slurm job array "
                             "(submitit; its local executor where there is no Slurm).")] = "local",
    jobs: Annotated[Optional[str], typer.Option("--jobs", "-j", metavar="N|auto",
                    help="Runs at once: local pool size (default 1: one after another in this process; auto: "
                    "one per GPU, or a few on a CPU), Ray's cap, Slurm's array parallelism (default 32).")] = None,
    runs_per_gpu: Annotated[int, typer.Option("--runs-per-gpu", min=1,
                            help="Local: runs packed onto one GPU at once (few-shot runs leave most of it "
                            "idle).")] = 1,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Torch CPU threads of "
                       "each run; fixed (and recorded in its config.json) so that numbers do not depend on the "
                       "executor or --jobs.")] = 1,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray: the "
                           "cluster to use (e.g. auto, ray://head:10001; default: start Ray here).")] = None,
    gpus_per_run: Annotated[Optional[float], typer.Option("--gpus-per-run", min=0,
                            help="Ray: GPUs per run (0.25 packs four on a GPU); Slurm: GPUs per array task.")] = None,
    cpus_per_run: Annotated[Optional[float], typer.Option("--cpus-per-run", min=0,
                            help="Ray / Slurm: CPUs per run (default: --threads).")] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm: the "
                         "partition.")] = None,
    time_minutes: Annotated[int, typer.Option("--time", min=1, metavar="MINUTES",
                            help="Slurm: time limit of each run, in minutes.")] = 60,
    save_models: Annotated[bool, typer.Option("--save-models", help="Keep each run's fine-tuned checkpoint.")] = False,
    save_every: Annotated[int, typer.Option("--save-every", min=0, help="Save resumable state every N epochs.")] = 0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed runs again.")] = False,
    tensorboard: Annotated[Optional[str], typer.Option("--tensorboard", help="Log every run's losses, accuracies, "
                           "learning rate, gradient norm and images/s to TensorBoard, in DIR/<run_id> "
                           "(pip install \"ghnorth[tensorboard]\").")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs (this shard's) and stop.")] = False,
    at: AtOption = "final",
    plot: PlotOption = False,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune every (arch, init, configuration, seed) not finished yet, then print the report."""
    from ghnorth_cli.experiment import parse_shard, plan_runs, run_experiment, select_shard
    from ghnorth_cli.experiment.executor import FinetuneExecutor
    from ghnorth_cli.experiment.executors import make_executor, parse_jobs
    from ghnorth_cli.experiment.initspec import OrthSettings, parse_orth_from
    from ghnorth_cli.experiment.progress import ExperimentProgress

    default_from, per_arch_from = parse_orth_from(orth_from or [])
    orth = OrthSettings(pp_preset, beta, default_from, per_arch_from, noise_layers)
    experiment = _build_experiment(
        preset=preset, archs=_split(arch), inits=init or [], grids=grid or [], seeds=seeds, sets=set_ or [],
        data={"data": data, "labels_per_class": labels_per_class, "val_size": val_size, "data_seed": data_seed},
        orth=orth)
    index, count = parse_shard(shard)
    runs = select_shard(plan_runs(experiment, applies=_init_applies), index=index, count=count)
    if dry_run:
        return _dry_run(runs, as_json=as_json)
    pool = make_executor(executor_name, out_dir=output, device=device, jobs=parse_jobs(jobs),
                         runs_per_gpu=runs_per_gpu, threads=threads, ray_address=ray_address,
                         gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, partition=partition,
                         time_minutes=time_minutes)
    if tensorboard is not None:
        from ghnorth_cli.tensorboard_log import require_tensorboard

        require_tensorboard()
    executor = FinetuneExecutor(output, orth, data_dir=data_dir, download=download, device=device,
                                save_models=save_models, save_every=save_every, tensorboard=tensorboard)
    with ExperimentProgress() as progress:
        run_experiment(experiment, runs, out_dir=output, executor=executor, preflight=executor.preflight,
                       retry_failed=retry_failed, pool=pool, threads=threads, on_plan=progress.on_plan,
                       on_start=progress.on_start, on_run=progress.on_run)
    _print_report([output], out_dir=output, at=at, plot=plot, as_json=as_json)


@experiment_app.command("report")
def report_command(
    folders: Annotated[list[Path], typer.Argument(help="Experiment directories (e.g. one per shard) to merge.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where report.md/.csv/.json go "
                      "(default: the first directory).")] = None,
    at: AtOption = "final",
    plot: PlotOption = False,
    as_json: JsonOption = False,
) -> None:
    """Merge the finished runs of experiment directories into one report (Markdown on stdout)."""
    _print_report(folders, out_dir=output or folders[0], at=at, plot=plot, as_json=as_json)
