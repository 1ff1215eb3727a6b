"""Comparing initializations the way the paper's Table 1 does (``ghnorth experiment``).

Plan (archs x inits x grid x seeds) -> runs, each an ordinary fine-tuning run in its own
directory -> report (per arch and init, the configuration with the best mean validation
accuracy; its test accuracy as mean ± std over seeds).
"""

from ghnorth_cli.experiment.grid import expand, parse_grid, parse_grids
from ghnorth_cli.experiment.initspec import InitSpec, OrthSettings, parse_init, parse_inits
from ghnorth_cli.experiment.plan import DataSettings, Experiment, Run, parse_shard, plan_runs, select_shard
from ghnorth_cli.experiment.report import Report, build_report, markdown_report, write_report
from ghnorth_cli.experiment.runner import Executor, RunOutcome, RunPaths, run_experiment

__all__ = [
    "DataSettings", "Executor", "Experiment", "InitSpec", "OrthSettings", "Report", "Run", "RunOutcome", "RunPaths",
    "build_report", "expand", "markdown_report", "parse_grid", "parse_grids", "parse_init", "parse_inits",
    "parse_shard", "plan_runs", "run_experiment", "select_shard", "write_report",
]
