"""``recmig report <sweep dir>...``: a sweep's runs as comparison tables, tests and a plot.

Reads every ``metrics.json`` below the folders together with the run's Hydra config
(``.hydra/config.yaml``) and per-user test rows (``test_users.parquet``, where the run has
them) and writes the files below; the ``runs.csv`` of an earlier report may stand in for run
folders that are gone (see :func:`collect`):

``results.md``
    per (setting, strategy): mean ± std over seeds and the number of seeds; for transfer
    strategies the relative gain over ``target_only`` in the same setting and a paired
    significance test (Wilcoxon signed-rank over the test users of the group, each user's
    metric averaged over seeds; runs without per-user rows fall back to a paired t-test over
    seeds). A second table repeats the gains and tests against the strongest classical
    baseline of each setting (popularity, ItemKNN, EASE, user_bias: the best mean on the
    headline metric, cold RMSE or cold NDCG@10). Then beyond-accuracy metrics (coverage,
    novelty, popularity) and NDCG@10 sliced by user gender and age where the data has them.
``results.csv``, ``runs.csv``, ``slices.csv``
    the same numbers with every column; one row per run.
``slices.png``
    the sliced metric per user attribute value and strategy.
``results.png``
    NDCG@10 of cold and warm test users per strategy and setting, error bars one std (or the
    first requested metrics when those are not among them).

A *setting* is a command-line override of the data (``data.scenario.cold_fraction=0.5``):
baselines are compared within it. Any other override that differs between runs of the same
strategy (``encoder=text``) is a *variant*, shown as ``strategy [override]``.

Job folders of a sweep without ``metrics.json`` (a failed job, or one still running) are named
in the output and in ``results.md``; the finished ones are reported.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recmig.atomic import write_csv_atomic, write_text_atomic
from recmig.report.plots import plot, plot_slices
from recmig.report.runs import EARLIER, UnfinishedJob, collect, earlier_report, unfinished_jobs
from recmig.report.statistics import (
    BEYOND_METRICS,
    CLASSICAL_BASELINES,
    DEFAULT_METRICS,
    RATING_METRICS,
    slices,
    strongest_baselines,
    summarize,
)
from recmig.report.tables import (
    slices_markdown,
    strongest_markdown,
    to_markdown,
    unfinished_markdown,
)
from recmig.report.transfer import plot_privacy, privacy_markdown, weights_markdown

__all__ = [  # what other modules and scripts import from here
    "CLASSICAL_BASELINES",
    "DEFAULT_METRICS",
    "collect",
    "main",
    "report_folder",
    "slices",
    "strongest_baselines",
    "summarize",
    "to_markdown",
    "write_report",
]

HEADLINE_PANELS = (
    ("test/cold/rmse", "test/warm/rmse"),
    ("test/cold/ndcg@10", "test/warm/ndcg@10"),
)
# What write_report leaves in its folder (slices only where the data has demographics).
REPORT_FILES = (
    "results.md",
    "results.csv",
    "runs.csv",
    "slices.csv",
    "results.png",
    "slices.png",
    "privacy.png",
)


def log_to_wandb(out: Path, group: str, project: str = "recmig") -> None:
    """Log the report (table + files) as a W&B artifact in the sweep's group (offline unless
    WANDB_MODE says otherwise; upload later with ``wandb sync``)."""
    import os

    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=project, group=group, job_type="report", dir=str(out))
    run.log({"results": wandb.Table(dataframe=pd.read_csv(out / "results.csv"))})
    artifact = wandb.Artifact(f"report-{group}".replace("/", "-"), type="report")
    for name in REPORT_FILES:
        if (out / name).is_file():
            artifact.add_file(str(out / name))
    run.log_artifact(artifact)
    run.finish()


def write_report(
    runs: pd.DataFrame,
    out: Path,
    metrics: tuple[str, ...] | None = None,
    baselines: tuple[str, ...] = CLASSICAL_BASELINES,
    unfinished: Sequence[UnfinishedJob] = (),
) -> str:
    """All tables and the plots into ``out``; returns the Markdown. ``metrics``: the main
    table's columns (default: those of DEFAULT_METRICS the runs have); ``baselines``: the
    strategies the strongest baseline of a setting is chosen from; ``unfinished``: the jobs
    without metrics.json, named first so no reader takes the tables for the whole sweep."""
    if metrics is None:
        metrics = tuple(m for m in DEFAULT_METRICS if m in runs.columns)
    table = summarize(runs, metrics, baselines)
    missing = unfinished_markdown(unfinished)
    sections = [missing] if missing else []
    sections.append(to_markdown(table, metrics))
    against = strongest_markdown(table, metrics)
    if against:
        sections.append(against)
    beyond = tuple(m for m in BEYOND_METRICS if m in runs.columns)
    if beyond:
        beyond_table = summarize(runs, beyond, baselines=())
        sections += ["Beyond accuracy (top 10 of test users):", to_markdown(beyond_table, beyond)]
        table = table.join(beyond_table.drop(columns="seeds"))
    weights = weights_markdown(runs)
    if weights:
        sections.append(weights)
    curve = tuple(m for m in ("test/cold/ndcg@10", "test/warm/ndcg@10") if m in runs.columns)
    private = privacy_markdown(runs, curve)
    if private:
        sections.append(private)
    # Slices show the headline per-user metric: a rating sweep's error, else NDCG@10.
    slice_column = "rmse" if any(m in runs.columns for m in RATING_METRICS) else "ndcg@10"
    sliced = slices(runs, slice_column)
    if not sliced.empty:
        sections.append(slices_markdown(sliced, slice_column))
    markdown = "\n\n".join(sections)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.md", markdown + "\n")
    write_csv_atomic(out / "runs.csv", runs.drop(columns=EARLIER, errors="ignore"), index=False)
    earlier_report.cache_clear()  # out may be a folder read as an earlier report
    write_csv_atomic(out / "results.csv", table)
    if not sliced.empty:
        write_csv_atomic(out / "slices.csv", sliced)
        plot_slices(sliced, out / "slices.png", slice_column)
    # The headline panels when present (RMSE of a rating sweep, else NDCG@10), else the first
    # requested metrics.
    headlines = [tuple(m for m in panels if m in metrics) for panels in HEADLINE_PANELS]
    plotted = next((panels for panels in headlines if panels), ())
    plotted = plotted or tuple(m for m in metrics if not m.startswith("time/"))[:4]
    if plotted:
        plot(table, out / "results.png", plotted)
    if private:
        plot_privacy(runs, out / "privacy.png", curve)
    return markdown


def examples_markdown(runs: pd.DataFrame, users: int, metric: str = "test/cold/ndcg@10") -> str:
    """Worked examples from the lowest-seed run of the strategy with the best mean ``metric``
    (its folder must still exist: the examples load its checkpoint)."""
    from recmig.serving import Recommender
    from recmig.serving.analysis import worked_examples

    folders = runs[runs["run"].map(lambda r: isinstance(r, str) and Path(r).is_dir())]
    if folders.empty or metric not in folders.columns:
        raise ValueError(f"--examples needs run folders with {metric}; none of these runs has")
    best = folders.groupby(["setting", "strategy"])[metric].mean().idxmax()
    chosen = folders[(folders["setting"] == best[0]) & (folders["strategy"] == best[1])]
    run = chosen.sort_values("seed").iloc[0]
    setting = f", {best[0]}" if best[0] else ""
    title = f"Worked examples ({run['strategy']}, seed {run['seed']}{setting})"
    return f"{title}:\n\n" + worked_examples(Recommender.from_run(run["run"]), users=users)


def report_folder(sources: list[Path], out: Path | None) -> Path:
    """Where a report of ``sources`` goes: ``out``, else the first sweep folder among them."""
    folder = out or next((Path(s) for s in sources if Path(s).is_dir()), None)
    if folder is None:
        raise ValueError("--out is needed when every source is a runs.csv")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recmig report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sweep_dirs", type=Path, nargs="+", help="multirun folders or runs.csv of earlier reports"
    )
    parser.add_argument(
        "--metrics", nargs="+", help=f"main table columns (default: {' '.join(DEFAULT_METRICS)})"
    )
    parser.add_argument("--out", type=Path, help="folder for the report (default: the sweep)")
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=list(CLASSICAL_BASELINES),
        help="strategies the strongest baseline of each setting is chosen from (default: "
        f"{' '.join(CLASSICAL_BASELINES)}; none: no such table)",
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also log the report as a W&B artifact"
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=0,
        help="append N worked examples (cold users' source history -> top target items -> "
        "their explanations) from the run of the best strategy by test/cold/ndcg@10",
    )
    args = parser.parse_args(argv)
    try:
        out = report_folder(args.sweep_dirs, args.out)
    except ValueError as err:
        parser.error(str(err))
    runs = collect(args.sweep_dirs)
    metrics = tuple(args.metrics) if args.metrics else None
    unfinished = unfinished_jobs(args.sweep_dirs)
    markdown = write_report(runs, out, metrics, tuple(args.baselines), unfinished)
    if args.examples:
        markdown += "\n\n" + examples_markdown(runs, args.examples)
        write_text_atomic(out / "results.md", markdown + "\n")
    print(markdown)
    written = ", ".join(name for name in REPORT_FILES if (out / name).is_file())
    print(f"\nwritten to {out}: {written}")
    if args.wandb:
        log_to_wandb(out, group=args.sweep_dirs[0].resolve().name)
