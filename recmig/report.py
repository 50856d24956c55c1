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
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy import stats

from recmig.atomic import pyplot, save_figure, write_csv_atomic, write_text_atomic
from recmig.transfer_report import plot_privacy, privacy_markdown, weights_markdown

BASELINE = "target_only"
CLASSICAL_BASELINES = ("popularity", "itemknn", "ease", "user_bias")
"""Strategies a setting's *strongest baseline* is chosen from (``--baselines``): beating
target_only is a weak claim once a classical model beats target_only."""
# Rating-objective runs (protocol P2's rating view) lead with their errors; lower is better,
# so a negative gain is an improvement there. Ranking runs have none of these columns.
RATING_METRICS = ("test/cold/rmse", "test/cold/mae", "test/warm/rmse", "test/warm/mae")
DEFAULT_METRICS = (
    *RATING_METRICS,
    "test/cold/ndcg@10",
    "test/cold/recall@10",
    "test/warm/ndcg@10",
    "test/warm/recall@10",
    "time/fit_s",
)
BEYOND_METRICS = tuple(
    f"test/{group}/{name}@10"
    for group in ("cold", "warm")
    for name in ("coverage", "novelty", "arp")
)
HEADLINE_PANELS = (
    ("test/cold/rmse", "test/warm/rmse"),
    ("test/cold/ndcg@10", "test/warm/ndcg@10"),
)
SLICE_ATTRIBUTES = ("gender", "age")
EARLIER = "earlier_report"
"""Column of collect()'s table: the folder of the earlier report a row was read from."""
# What write_report leaves in its folder (slices only where the data has demographics).
ANALYSES = ("streaming", "faithfulness")
"""Summaries a run folder may hold beside metrics.json (``<name>.json``, from ``recmig stream``
and ``recmig faithfulness``): their keys join the run's metrics as ``<name>/<key>``."""
REPORT_FILES = (
    "results.md",
    "results.csv",
    "runs.csv",
    "slices.csv",
    "results.png",
    "slices.png",
    "privacy.png",
)
# GroupLens ML-1M age codes are these lower bounds; ML-100K's exact ages are binned the same way.
AGE_BINS = (0, 18, 25, 35, 45, 50, 56, 200)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


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


def _folder_runs(sweep_dir: Path) -> list[_Run]:
    found = []
    for metrics_path in sorted(sweep_dir.rglob("metrics.json")):
        run = metrics_path.parent
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        listed = [o.lstrip("+~") for o in OmegaConf.load(run / ".hydra" / "overrides.yaml")]
        # The experiment names the bundle a run came from, not a setting: what differs between
        # bundles shows in the overrides (and data.* keys) that differ, so runs of two
        # experiments on one scenario (privacy_ml1m beside multi_source_ml1m) line up.
        skipped = ("seed=", "strategy=", "hydra.", "paths.", "experiment=")
        overrides = dict(o.split("=", 1) for o in listed if not o.startswith(skipped))
        metrics = json.loads(metrics_path.read_text())
        for name in ANALYSES:  # `recmig stream` / `faithfulness` summaries, when computed
            if (run / f"{name}.json").is_file():
                analysed = json.loads((run / f"{name}.json").read_text())
                metrics.update({f"{name}/{k}": v for k, v in analysed.items()})
        row = {"strategy": cfg.strategy.name, "seed": cfg.seed, "run": str(run), **metrics}
        found.append(_Run(row, overrides, cfg))
    return found


def _read_report_csv(path: Path) -> pd.DataFrame:
    """A table written by an earlier report. Only empty cells are missing values (pandas would
    also take text such as "NA" or "null" for one), and the default setting reads as "", as
    collect() labels it, not NaN."""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"setting": str})
    return table.fillna({"setting": ""}) if "setting" in table.columns else table


def _csv_runs(path: Path) -> list[_Run]:
    """Rows of an earlier report's ``runs.csv``. Tables written since the ``overrides`` and
    ``config`` columns exist carry both; older ones only the keys that varied in their report,
    parsed back from ``setting`` and the strategy's ``[variant]``."""
    table = _read_report_csv(path)
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
            found.append(_Run(row, json.loads(overrides), cfg, from_folder=False))
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
def _test_users(run: str) -> pd.DataFrame | None:
    path = Path(run) / "test_users.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def _per_user(runs: pd.DataFrame, group: str, column: str) -> pd.Series | None:
    """A metric per test user of ``group``, averaged over the runs (seeds); None if a run
    has no per-user rows or the metric is not per user (coverage is one number per run)."""
    tables = [_test_users(r) for r in runs["run"]]
    if any(t is None or column not in t.columns for t in tables):
        return None
    stacked = pd.concat([t[t["group"] == group] for t in tables])
    return stacked.groupby("user_id")[column].mean()


def paired_test(runs: pd.DataFrame, base: pd.DataFrame, metric: str) -> tuple[float, str]:
    """p-value of strategy vs baseline on ``metric`` (test/<group>/<name>) and the test used."""
    _, group, column = metric.split("/", 2)
    ours, theirs = _per_user(runs, group, column), _per_user(base, group, column)
    if ours is not None and theirs is not None:
        both = pd.concat([ours, theirs], axis=1, join="inner").dropna()
        diff = both.iloc[:, 0] - both.iloc[:, 1]
        if len(diff) == 0 or np.allclose(diff, 0):
            return 1.0, "users"
        return float(stats.wilcoxon(both.iloc[:, 0], both.iloc[:, 1]).pvalue), "users"
    paired = (
        runs.set_index("seed")[metric]
        .to_frame("a")
        .join(base.set_index("seed")[metric].to_frame("b"), how="inner")
    )
    if len(paired) < 2 or np.allclose(paired["a"], paired["b"]):
        return math.nan, "seeds"
    return float(stats.ttest_rel(paired["a"], paired["b"]).pvalue), "seeds"


@dataclass(frozen=True)
class _EarlierReport:
    """What an earlier report computed from per-user rows that are gone with its run folders."""

    results: pd.DataFrame
    """Its results.csv, indexed by (setting, strategy)."""
    runs: pd.DataFrame
    """Its runs.csv: the runs its tests and slices were computed from."""
    slices: pd.DataFrame
    """Its slices.csv (empty if it had none)."""


@cache
def _earlier_report(folder: str) -> _EarlierReport:
    def read(name: str) -> pd.DataFrame:
        path = Path(folder) / name
        return _read_report_csv(path) if path.is_file() else pd.DataFrame()

    results = read("results.csv")
    if not results.empty:
        results = results.set_index(["setting", "strategy"])
    return _EarlierReport(results, read("runs.csv"), read("slices.csv"))


def _from_one_earlier_report(part: pd.DataFrame) -> _EarlierReport | None:
    """The earlier report all of ``part``'s runs were read from, if they share one."""
    if EARLIER not in part.columns or part[EARLIER].isna().any():
        return None
    folders = set(part[EARLIER])
    return _earlier_report(folders.pop()) if len(folders) == 1 else None


def _earlier_test(
    setting: str, strategy: str, part: pd.DataFrame, base: pd.DataFrame, metric: str
) -> tuple[float, str] | None:
    """The per-user test an earlier report made of this cell, whose per-user rows are gone,
    provided the comparison has not changed since: the cell's runs are that report's rows and
    the baseline has the same value per seed as then (a rerun reproduced it exactly)."""
    earlier = _from_one_earlier_report(part)
    if earlier is None or (setting, strategy) not in earlier.results.index:
        return None
    row = earlier.results.loc[(setting, strategy)]
    if row.get(f"{metric} test") != "users" or pd.isna(row.get(f"{metric} p")):
        return None
    then = earlier.runs
    then_base = then[(then["setting"] == setting) & (then["strategy"] == BASELINE)]
    now, before = base.set_index("seed")[metric], then_base.set_index("seed")[metric]
    if sorted(now.index) != sorted(before.index) or not np.allclose(
        now.sort_index(), before.sort_index(), rtol=0, atol=1e-9
    ):
        return None
    return float(row[f"{metric} p"]), "users"


def _lower_is_better(metric: str) -> bool:
    return metric in RATING_METRICS


def headline_metric(metrics: tuple[str, ...]) -> str | None:
    """The metric that ranks strategies: the first of ``metrics`` that is not a timing."""
    return next((m for m in metrics if not m.startswith("time/")), None)


def strongest_baselines(
    runs: pd.DataFrame, metric: str, baselines: tuple[str, ...] = CLASSICAL_BASELINES
) -> dict[str, str]:
    """setting -> the label of its best classical baseline on ``metric`` (mean over seeds);
    settings without one are left out. A baseline's variants (``ease [strategy.lam=500]``)
    compete as themselves."""
    names = runs["strategy"].str.split(" [", regex=False).str[0]
    found = {}
    for setting, part in runs[names.isin(baselines)].groupby("setting"):
        means = part.groupby("strategy")[metric].mean().dropna()
        if not means.empty:
            found[setting] = means.idxmin() if _lower_is_better(metric) else means.idxmax()
    return found


def summarize(
    runs: pd.DataFrame,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    baselines: tuple[str, ...] = CLASSICAL_BASELINES,
) -> pd.DataFrame:
    """mean, std, seed count per (setting, strategy); gain % and p-value vs target_only, and
    (columns ``<metric> vs strongest %`` / ``p`` / ``test``, ``strongest``) vs the strongest of
    ``baselines`` in the setting, chosen on the headline metric."""
    missing = [m for m in metrics if m not in runs.columns]
    if missing:
        raise ValueError(f"metrics {missing} are in no run; available: {sorted(runs.columns)}")
    grouped = runs.groupby(["setting", "strategy"])[list(metrics)]
    table = grouped.mean().add_suffix(" mean").join(grouped.std(ddof=1).add_suffix(" std"))
    table["seeds"] = grouped.size()
    for (setting, strategy), part in runs.groupby(["setting", "strategy"]):
        base = runs[(runs["setting"] == setting) & (runs["strategy"] == BASELINE)]
        if base.empty or strategy == BASELINE:
            continue
        for metric, gain, p, over in _comparisons(part, base, metrics):
            if over == "seeds":
                p, over = _earlier_test(setting, strategy, part, base, metric) or (p, over)
            table.loc[(setting, strategy), f"{metric} gain %"] = gain
            table.loc[(setting, strategy), f"{metric} p"] = p
            table.loc[(setting, strategy), f"{metric} test"] = over
    headline = headline_metric(metrics)
    strongest = strongest_baselines(runs, headline, baselines) if headline else {}
    for (setting, strategy), part in runs.groupby(["setting", "strategy"]):
        if setting not in strongest:
            continue
        table.loc[(setting, strategy), "strongest"] = strongest[setting]
        base = runs[(runs["setting"] == setting) & (runs["strategy"] == strongest[setting])]
        if strategy == strongest[setting]:
            continue
        for metric, gain, p, over in _comparisons(part, base, metrics):
            table.loc[(setting, strategy), f"{metric} vs strongest %"] = gain
            table.loc[(setting, strategy), f"{metric} vs strongest p"] = p
            table.loc[(setting, strategy), f"{metric} vs strongest test"] = over
    return table


def _comparisons(part: pd.DataFrame, base: pd.DataFrame, metrics: tuple[str, ...]):
    """(metric, gain % of the mean, p-value, test) of runs ``part`` against runs ``base`` for
    every metric that compares (timings and metrics ``part`` lacks are skipped)."""
    for metric in metrics:
        if metric.startswith("time/") or part[metric].isna().all():
            continue
        gain = 100 * (part[metric].mean() / base[metric].mean() - 1)
        yield (metric, gain, *paired_test(part, base, metric))


def _cell(row: pd.Series, metric: str) -> str:
    mean, std = row[f"{metric} mean"], row[f"{metric} std"]
    if pd.isna(mean):
        return "–"
    if metric.startswith("time/"):
        return f"{mean:.0f} ± {std:.0f}" if not pd.isna(std) else f"{mean:.0f}"
    cell = f"{mean:.4f} ± {std:.4f}" if not pd.isna(std) else f"{mean:.4f}"
    gain = row.get(f"{metric} gain %")
    if gain is not None and not pd.isna(gain):
        significance = _significance(row.get(f"{metric} p"), row.get(f"{metric} test"))
        cell += f" ({gain:+.1f}%{significance})"
    return cell


def _significance(p, test) -> str:
    """ ", p=0.01" (", p=0.01 over seeds" for the t-test fallback); "" without a p-value."""
    if p is None or pd.isna(p):
        return ""
    return f", {_p_value(p)}" + (" over seeds" if test == "seeds" else "")


def strongest_markdown(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """Gains and paired tests of every strategy against its setting's strongest baseline;
    "" when no setting has a classical baseline."""
    if "strongest" not in table.columns or table["strongest"].isna().all():
        return ""
    shown = [m for m in metrics if f"{m} vs strongest %" in table.columns]
    header = ["setting", "strongest baseline", "strategy", *shown]
    lines = [
        f"Against the strongest classical baseline of each setting (best mean "
        f"{headline_metric(metrics)}); a negative change in an error is an improvement:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (setting, strategy), row in table[table["strongest"].notna()].iterrows():
        if strategy == row["strongest"]:
            continue
        cells = [setting or "(default)", row["strongest"], strategy]
        for metric in shown:
            gain = row[f"{metric} vs strongest %"]
            test = row[f"{metric} vs strongest test"]
            significance = _significance(row[f"{metric} vs strongest p"], test)
            cells.append("–" if pd.isna(gain) else f"{gain:+.1f}%{significance}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p_value(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    header = ["setting", "strategy", "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (setting, strategy), row in table.iterrows():
        cells = [setting or "(default)", strategy, str(int(row["seeds"]))]
        cells += [_cell(row, metric) for metric in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _age_group(values: pd.Series) -> pd.Series:
    ages = pd.to_numeric(values, errors="coerce")
    return pd.cut(ages, AGE_BINS, right=False, labels=AGE_LABELS).astype(str)


def slices(runs: pd.DataFrame, column: str = "ndcg@10") -> pd.DataFrame:
    """Mean per-user ``column`` by user attribute value, per setting/strategy/group; the
    per-run means are averaged over seeds. Empty when no run has user attributes."""
    parts = []
    for _, run in runs.iterrows():
        users = _test_users(run["run"])
        if users is None or column not in users.columns:
            continue
        for attribute in SLICE_ATTRIBUTES:
            if attribute not in users.columns or users[attribute].isna().all():
                continue
            values = users[attribute].astype(str)
            if attribute == "age":
                values = _age_group(users[attribute])
            means = users.groupby(["group", values.rename("value")])[column].agg(["mean", "size"])
            parts.append(
                means.reset_index().assign(
                    setting=run["setting"], strategy=run["strategy"], attribute=attribute
                )
            )
    keys = ["setting", "strategy", "group", "attribute", "value"]
    tables = _earlier_slices(runs, keys)
    if parts:
        computed = pd.concat(parts).groupby(keys)
        tables.append(computed.agg(mean=("mean", "mean"), users=("size", "max")))
    return pd.concat(tables).sort_index() if tables else pd.DataFrame()


def _earlier_slices(runs: pd.DataFrame, keys: list[str]) -> list[pd.DataFrame]:
    """Slices of the cells whose per-user rows are gone, as the earlier report they were read
    from computed them (a slice does not depend on the baseline)."""
    kept = []
    for (setting, strategy), cell in runs.groupby(["setting", "strategy"]):
        if any(_test_users(r) is not None for r in cell["run"]):
            continue
        earlier = _from_one_earlier_report(cell)
        if earlier is None or "setting" not in earlier.slices.columns:
            continue
        then = earlier.slices
        then = then[(then["setting"] == setting) & (then["strategy"] == strategy)]
        then = then[then["mean"].notna()].astype({"value": str})
        if not then.empty:
            kept.append(then.set_index(keys)[["mean", "users"]])
    return kept


def _wide(values: pd.Series, attribute: str) -> pd.DataFrame:
    """Attribute values as columns, ages youngest first (not alphabetical)."""
    wide = values.unstack("value")
    if attribute == "age":
        wide = wide[[a for a in AGE_LABELS if a in wide.columns]]
    return wide


def slices_markdown(sliced: pd.DataFrame, column: str = "ndcg@10") -> str:
    if sliced.empty:
        return ""
    blocks = []
    for (group, attribute), part in sliced.groupby(level=["group", "attribute"]):
        wide = _wide(part["mean"].droplevel(["group", "attribute"]), attribute)
        users = _wide(part["users"].droplevel(["group", "attribute"]), attribute)
        low, high = users.min(), users.max()  # settings with other splits have other users
        counts = {
            v: f"n={int(low[v])}" if low[v] == high[v] else f"n={int(low[v])}-{int(high[v])}"
            for v in wide.columns
        }
        header = ["setting", "strategy", *[f"{v} ({counts[v]})" for v in wide.columns]]
        lines = [f"{group} test users, {column} by {attribute}:", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (setting, strategy), row in wide.iterrows():
            values = [f"{v:.4f}" if not pd.isna(v) else "–" for v in row]
            lines.append("| " + " | ".join([setting or "(default)", strategy, *values]) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _grouped_bars(ax, categories: list, bars: list[tuple[str, np.ndarray, np.ndarray | None]]):
    """One group of bars per category; ``bars``: (label, heights, error bars or None)."""
    width = 0.8 / len(bars)
    for i, (label, heights, errors) in enumerate(bars):
        x = np.arange(len(categories)) + (i - (len(bars) - 1) / 2) * width
        ax.bar(x, heights, width, yerr=errors, capsize=3 if errors is not None else 0, label=label)


def plot(table: pd.DataFrame, path: Path, metrics=("test/cold/ndcg@10", "test/warm/ndcg@10")):
    """Grouped bars: one panel per metric, strategies on x, one colour per setting."""
    plt = pyplot()
    settings = list(dict.fromkeys(table.index.get_level_values("setting")))
    strategies = list(dict.fromkeys(table.index.get_level_values("strategy")))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(6, 1.1 * len(strategies)) * 2, 4.5), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        bars = []
        for setting in settings:
            part = table.xs(setting, level="setting").reindex(strategies)
            errors = part[f"{metric} std"].fillna(0).to_numpy()
            bars.append((setting or "(default)", part[f"{metric} mean"].to_numpy(), errors))
        _grouped_bars(ax, strategies, bars)
        if metric in RATING_METRICS:  # errors near 1 differ in the third decimal: zoom in
            low = min(np.nanmin(h - e) for _, h, e in bars)
            high = max(np.nanmax(h + e) for _, h, e in bars)
            pad = 0.1 * (high - low) or 0.01
            ax.set_ylim(low - pad, high + pad)
        ax.set_xticks(np.arange(len(strategies)), strategies, rotation=35, ha="right")
        ax.set_title(metric)
        ax.set_ylabel("mean over seeds ± std")
    if len(settings) > 1:
        axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_slices(sliced: pd.DataFrame, path: Path, column: str = "ndcg@10") -> None:
    """One panel per (user group, attribute): the metric per attribute value, one bar per
    strategy, for the first setting (the CSV has all)."""
    plt = pyplot()
    setting = sorted(sliced.index.get_level_values("setting").unique())[0]
    part = sliced.xs(setting, level="setting")
    panels = list(dict.fromkeys(part.index.droplevel(["strategy", "value"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (group, attribute) in zip(axes[0], panels, strict=True):
        wide = _wide(part.xs((group, attribute), level=("group", "attribute"))["mean"], attribute)
        _grouped_bars(
            ax, list(wide.columns), [(s, row.to_numpy(), None) for s, row in wide.iterrows()]
        )
        ax.set_xticks(np.arange(len(wide.columns)), wide.columns)
        ax.set_title(f"{group} test users by {attribute}" + (f" ({setting})" if setting else ""))
        ax.set_ylabel(f"mean {column} (seeds averaged)")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


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
) -> str:
    """All tables and the plots into ``out``; returns the Markdown. ``metrics``: the main
    table's columns (default: those of DEFAULT_METRICS the runs have); ``baselines``: the
    strategies the strongest baseline of a setting is chosen from."""
    if metrics is None:
        metrics = tuple(m for m in DEFAULT_METRICS if m in runs.columns)
    table = summarize(runs, metrics, baselines)
    sections = [to_markdown(table, metrics)]
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
    _earlier_report.cache_clear()  # out may be a folder read as an earlier report
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
    markdown = write_report(runs, out, metrics, tuple(args.baselines))
    if args.examples:
        markdown += "\n\n" + examples_markdown(runs, args.examples)
        write_text_atomic(out / "results.md", markdown + "\n")
    print(markdown)
    written = ", ".join(name for name in REPORT_FILES if (out / name).is_file())
    print(f"\nwritten to {out}: {written}")
    if args.wandb:
        log_to_wandb(out, group=args.sweep_dirs[0].resolve().name)
