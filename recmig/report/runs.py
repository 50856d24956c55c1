"""Where ``recmig report`` reads its runs: sweep folders and earlier reports' ``runs.csv``.

A run folder is what ``recmig train`` leaves: ``metrics.json``, the Hydra config and overrides
(``.hydra/``) and, where the run has them, per-user test rows (``test_users.parquet``). A job
folder with a Hydra config but no ``metrics.json`` failed or has not finished
(:func:`unfinished_jobs`). An earlier report's folder also holds what it computed from per-user
rows that are gone with its run folders (:func:`earlier_report`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

EARLIER = "earlier_report"
"""Column of collect()'s table: the folder of the earlier report a row was read from."""
ANALYSES = ("streaming", "faithfulness")
"""Summaries a run folder may hold beside metrics.json (``<name>.json``, from ``recmig stream``
and ``recmig faithfulness``): their keys join the run's metrics as ``<name>/<key>``."""


@dataclass
class _Run:
    """A finished run as collect() reads it, before settings and variants are labelled."""

    row: dict
    """strategy (plain name), seed, run folder and metrics."""
    overrides: dict[str, str]
    """Command-line overrides besides seed, strategy, hydra.* and paths.*."""
    config: DictConfig | None
    """The run's resolved config (None for rows of an old runs.csv without one)."""
    known: frozenset[str] | None = None
    """The override keys this row can tell (None: all). An old runs.csv records only the keys
    that varied in its own report; of any other key it cannot say whether it was set."""
    from_folder: bool = True


def collect(sources: list[Path] | Path) -> pd.DataFrame:
    """One row per finished run: strategy (with variant), setting, seed, run and metrics.

    A source is a sweep folder (every ``metrics.json`` below it) or the ``runs.csv`` of an
    earlier report, so new cells can join a committed table whose run folders are gone. A run
    folder supersedes a ``runs.csv`` row of the same setting, strategy and seed. The returned
    table keeps each run's overrides and config (JSON columns), which is what lets its
    ``runs.csv`` stand in for the folders later.
    """
    sources = [sources] if isinstance(sources, Path) else list(sources)
    found: list[_Run] = []
    for source in map(Path, sources):
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such sweep folder or runs.csv")
        found += _csv_runs(source) if source.is_file() else _folder_runs(source)
    if not found:
        where = ", ".join(map(str, sources))
        failed = ", ".join(str(job.folder) for job in unfinished_jobs(sources))
        if failed:
            raise ValueError(f"{where}: no finished run; jobs without metrics.json: {failed}")
        raise ValueError(f"{where}: no metrics.json below it (not a sweep folder?)")
    keys = sorted({k for r in found for k in r.overrides})
    # A run that left a swept key at its default gets the value from its config, so runs of
    # several sweeps line up (beta 0.2 by default and by override is one setting).
    for r in found:
        for k in keys:
            if r.config is None or k in r.overrides or not k.startswith("data."):
                continue
            if OmegaConf.select(r.config, k) is not None:
                r.overrides[k] = str(OmegaConf.select(r.config, k))
    varying = [
        k
        for k in keys
        if len({r.overrides.get(k) for r in found if r.known is None or k in r.known}) > 1
    ]

    def joined(o: dict, data: bool) -> str:
        return " ".join(f"{k}={o[k]}" for k in varying if k in o and k.startswith("data.") == data)

    runs = pd.DataFrame([r.row for r in found])
    variants = [joined(r.overrides, data=False) for r in found]
    runs["strategy"] = [
        s + (f" [{v}]" if v else "") for s, v in zip(runs["strategy"], variants, strict=True)
    ]
    runs["setting"] = [joined(r.overrides, data=True) for r in found]
    runs["overrides"] = [json.dumps(r.overrides, sort_keys=True) for r in found]
    runs["config"] = [
        json.dumps(OmegaConf.to_container(r.config)) if r.config is not None else None
        for r in found
    ]
    cells = list(zip(runs["setting"], runs["strategy"], runs["seed"], strict=True))
    in_folders = {cell for cell, r in zip(cells, found, strict=True) if r.from_folder}
    superseded = [not r.from_folder and c in in_folders for c, r in zip(cells, found, strict=True)]
    return runs[~np.array(superseded, dtype=bool)].reset_index(drop=True)


SPLIT_SEED = "data.scenario.seed"
SPLIT_STRIDE = 1000
"""A run on another split of the same scenario (``data.scenario.seed`` = s) is another
replicate of its cell, not another setting: its seed reads as ``seed + 1000 s``, so a cell's
mean ± std spans splits and initialisations alike, and each user's metric is averaged over the
runs where they were evaluated before the paired test (both sides ran the same splits)."""


def _folder_runs(sweep_dir: Path) -> list[_Run]:
    found = []
    for metrics_path in sorted(sweep_dir.rglob("metrics.json")):
        run = metrics_path.parent
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        listed = [o.lstrip("+~") for o in OmegaConf.load(run / ".hydra" / "overrides.yaml")]
        # The experiment names the bundle a run came from, not a setting: what differs between
        # bundles shows in the overrides (and data.* keys) that differ, so runs of two
        # experiments on one scenario (privacy_ml1m beside multi_source_ml1m) line up.
        skipped = ("seed=", "strategy=", "hydra.", "paths.", "experiment=", SPLIT_SEED + "=")
        overrides = dict(o.split("=", 1) for o in listed if not o.startswith(skipped))
        metrics = json.loads(metrics_path.read_text())
        for name in ANALYSES:  # `recmig stream` / `faithfulness` summaries, when computed
            if (run / f"{name}.json").is_file():
                analysed = json.loads((run / f"{name}.json").read_text())
                metrics.update({f"{name}/{k}": v for k, v in analysed.items()})
        split = int(OmegaConf.select(cfg, SPLIT_SEED, default=0) or 0)
        seed = int(cfg.seed) + SPLIT_STRIDE * split
        row = {"strategy": cfg.strategy.name, "seed": seed, "run": str(run), **metrics}
        found.append(_Run(row, overrides, cfg))
    return found


@dataclass(frozen=True)
class UnfinishedJob:
    """A job folder Hydra started that holds no metrics.json: the job failed, or still runs."""

    folder: Path
    overrides: tuple[str, ...]
    """The job's command-line overrides (its ``.hydra/overrides.yaml``): what tells it apart."""


def unfinished_jobs(sources: list[Path] | Path) -> list[UnfinishedJob]:
    """The job folders below the sweep folders among ``sources`` without ``metrics.json``, so
    a report of the finished ones can name what is missing from its tables (a ``runs.csv``
    source has none)."""
    sources = [sources] if isinstance(sources, Path) else list(sources)
    found = []
    for source in map(Path, sources):
        if not source.is_dir():
            continue
        for listed in sorted(source.rglob(".hydra/overrides.yaml")):
            job = listed.parent.parent
            if not (job / "metrics.json").is_file():
                overrides = tuple(str(o) for o in OmegaConf.load(listed))
                found.append(UnfinishedJob(job, overrides))
    return found


def read_report_csv(path: Path) -> pd.DataFrame:
    """A table written by an earlier report. Only empty cells are missing values (pandas would
    also take text such as "NA" or "null" for one), and the default setting reads as "", as
    collect() labels it, not NaN."""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"setting": str})
    return table.fillna({"setting": ""}) if "setting" in table.columns else table


def _csv_runs(path: Path) -> list[_Run]:
    """Rows of an earlier report's ``runs.csv``. Tables written since the ``overrides`` and
    ``config`` columns exist carry both; older ones only the keys that varied in their report,
    parsed back from ``setting`` and the strategy's ``[variant]``."""
    table = read_report_csv(path)
    missing = {"strategy", "seed", "run", "setting"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not a runs.csv of recmig report (lacks {sorted(missing)})")
    found = []
    for i, row in enumerate(table.to_dict("records")):
        row[EARLIER] = str(path.parent.resolve())
        label, setting = str(row.pop("strategy")), row.pop("setting")
        overrides, config = row.pop("overrides", None), row.pop("config", None)
        name, bracket, variant = label.rpartition(" [") if label.endswith("]") else ("", "", "")
        row["strategy"] = name if bracket else label
        if isinstance(overrides, str):
            cfg = OmegaConf.create(json.loads(config)) if isinstance(config, str) else None
            # (as for run folders: the experiment names a bundle, not a setting or variant)
            listed = {k: v for k, v in json.loads(overrides).items() if k != "experiment"}
            found.append(_Run(row, listed, cfg, from_folder=False))
            continue
        listed = f"{setting} {variant.removesuffix(']')}".split()
        if any("=" not in o for o in listed):
            raise ValueError(f"{path}: row {i + 2}: cannot read setting {setting!r} of {label!r}")
        found.append(_Run(row, dict(o.split("=", 1) for o in listed), None, from_folder=False))
    # Rows without a config (old tables, or rows that came from one) hold only the keys that
    # varied in their report: what any of them recorded is all they can tell.
    limited = [r for r in found if r.config is None]
    recorded = frozenset(k for r in limited for k in r.overrides)
    for r in limited:
        r.known = recorded
    return found


@cache
def user_rows(run: str) -> pd.DataFrame | None:
    """A run's per-user test rows (None if the run folder has none: gone, or an old run)."""
    path = Path(run) / "test_users.parquet"
    return pd.read_parquet(path) if path.is_file() else None


@dataclass(frozen=True)
class EarlierReport:
    """What an earlier report computed from per-user rows that are gone with its run folders."""

    results: pd.DataFrame
    """Its results.csv, indexed by (setting, strategy)."""
    runs: pd.DataFrame
    """Its runs.csv: the runs its tests and slices were computed from."""
    slices: pd.DataFrame
    """Its slices.csv (empty if it had none)."""


@cache
def earlier_report(folder: str) -> EarlierReport:
    def read(name: str) -> pd.DataFrame:
        path = Path(folder) / name
        return read_report_csv(path) if path.is_file() else pd.DataFrame()

    results = read("results.csv")
    if not results.empty:
        results = results.set_index(["setting", "strategy"])
    return EarlierReport(results, read("runs.csv"), read("slices.csv"))


def from_one_earlier_report(part: pd.DataFrame) -> EarlierReport | None:
    """The earlier report all of ``part``'s runs were read from, if they share one."""
    if EARLIER not in part.columns or part[EARLIER].isna().any():
        return None
    folders = set(part[EARLIER])
    return earlier_report(folders.pop()) if len(folders) == 1 else None
