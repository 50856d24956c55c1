"""What ``recmig report`` computes from the runs: means and spreads over seeds, gains and paired
tests against ``target_only`` and the strongest classical baseline, and per-user slices.

A strategy is compared within its setting. The paired test is a Wilcoxon signed-rank test over
the test users (each user's metric averaged over seeds) where every run has per-user rows, else
a paired t-test over seeds; a cell whose per-user rows are gone keeps the earlier report's test
while its baseline is unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from recmig.evaluation.ranking import NEW_ITEMS
from recmig.report.runs import from_one_earlier_report, user_rows

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
SLICE_ATTRIBUTES = ("gender", "age")
# GroupLens ML-1M age codes are these lower bounds; ML-100K's exact ages are binned the same way.
AGE_BINS = (0, 18, 25, 35, 45, 50, 56, 200)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


def _per_user(runs: pd.DataFrame, group: str, column: str) -> pd.Series | None:
    """A metric per test user of ``group``, averaged over the runs (seeds); None if a run
    has no per-user rows or the metric is not per user (coverage is one number per run)."""
    tables = [user_rows(r) for r in runs["run"]]
    if group == NEW_ITEMS:  # (its users are cold and warm ones: columns new_items/<metric>)
        column = f"{NEW_ITEMS}/{column}"
    if any(t is None or column not in t.columns for t in tables):
        return None
    rows = [t if group == NEW_ITEMS else t[t["group"] == group] for t in tables]
    stacked = pd.concat(rows)
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


def _earlier_test(
    setting: str, strategy: str, part: pd.DataFrame, base: pd.DataFrame, metric: str
) -> tuple[float, str] | None:
    """The per-user test an earlier report made of this cell, whose per-user rows are gone,
    provided the comparison has not changed since: the cell's runs are that report's rows and
    the baseline has the same value per seed as then (a rerun reproduced it exactly)."""
    earlier = from_one_earlier_report(part)
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


def _age_group(values: pd.Series) -> pd.Series:
    ages = pd.to_numeric(values, errors="coerce")
    return pd.cut(ages, AGE_BINS, right=False, labels=AGE_LABELS).astype(str)


def slices(runs: pd.DataFrame, column: str = "ndcg@10") -> pd.DataFrame:
    """Mean per-user ``column`` by user attribute value, per setting/strategy/group; the
    per-run means are averaged over seeds. Empty when no run has user attributes."""
    parts = []
    for _, run in runs.iterrows():
        users = user_rows(run["run"])
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
        if any(user_rows(r) is not None for r in cell["run"]):
            continue
        earlier = from_one_earlier_report(cell)
        if earlier is None or "setting" not in earlier.slices.columns:
            continue
        then = earlier.slices
        then = then[(then["setting"] == setting) & (then["strategy"] == strategy)]
        then = then[then["mean"].notna()].astype({"value": str})
        if not then.empty:
            kept.append(then.set_index(keys)[["mean", "users"]])
    return kept


def wide_by_value(values: pd.Series, attribute: str) -> pd.DataFrame:
    """Attribute values as columns, ages youngest first (not alphabetical)."""
    wide = values.unstack("value")
    if attribute == "age":
        wide = wide[[a for a in AGE_LABELS if a in wide.columns]]
    return wide
