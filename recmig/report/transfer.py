"""Report sections about how a transfer happened: domain weights and privacy budgets.

``recmig report`` adds them when its runs carry the numbers:

- **domain weights**: runs of a strategy that weighs domains per user (``fusion``) record each
  test user's weights (``test/<group>/weight/<domain>/{mean,p10,p50,p90}``) and, for global
  weights, ``fusion/weight/<domain>``: one table row per strategy and domain, so a reader sees
  which domain carried the transfer, for cold and for warm users;
- **privacy**: runs swept over ``privacy.epsilon`` give the privacy-utility curve, the metric
  against epsilon (mean and std over seeds), beside the strategies that release nothing
  (``target_only`` and the classical baselines of the same setting) as reference lines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from recmig.atomic import pyplot, save_figure
from recmig.evaluation.ranking import GROUPS
from recmig.privacy import as_float

EPSILON = "privacy.epsilon"


def _domains(runs: pd.DataFrame) -> list[str]:
    names = []
    for column in runs.columns:
        parts = column.split("/")
        if len(parts) == 5 and parts[0] == "test" and parts[2] == "weight":
            names.append(parts[3])
    return list(dict.fromkeys(names))


def weights_markdown(runs: pd.DataFrame) -> str:
    """Per-user domain weights (mean and 10th-90th percentile of test users, averaged over
    seeds) and learned global weights; "" when no run recorded any."""
    domains = _domains(runs)
    if not domains:
        return ""
    lines = [
        "Domain weights (test users; mean [p10, p90] of the per-user weights, averaged over "
        "seeds; `global`: the learned or fixed weight of a user with history everywhere):",
        "",
        "| setting | strategy | domain | cold | warm | global |",
        "|---|---|---|---|---|---|",
    ]
    for (setting, strategy), part in runs.groupby(["setting", "strategy"], sort=False):
        for domain in domains:
            if (
                f"test/warm/weight/{domain}/mean" not in part
                or part[f"test/warm/weight/{domain}/mean"].isna().all()
            ):
                continue
            cells = [setting or "(default)", strategy, domain]
            for group in GROUPS:
                key = f"test/{group}/weight/{domain}"
                if f"{key}/mean" not in part or part[f"{key}/mean"].isna().all():
                    cells.append("")
                    continue
                mean, low, high = (part[f"{key}/{s}"].mean() for s in ("mean", "p10", "p90"))
                cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
            fixed = f"fusion/weight/{domain}"
            cells.append(
                f"{part[fixed].mean():.3f}" if fixed in part and part[fixed].notna().any() else ""
            )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _epsilons(runs: pd.DataFrame) -> pd.Series:
    """Each run's privacy.epsilon (NaN: not swept over a budget)."""

    def epsilon(overrides: str) -> float:
        value = json.loads(overrides).get(EPSILON)
        return as_float("epsilon", value) if value is not None else math.nan

    return runs["overrides"].map(epsilon)


def _references(runs: pd.DataFrame, private: pd.DataFrame) -> pd.DataFrame:
    """Runs of the same settings that release nothing (no privacy.epsilon override)."""
    settings = set(private["setting"])
    return runs[runs["setting"].isin(settings) & _epsilons(runs).isna()]


def privacy_table(runs: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """mean and std over seeds per (setting, strategy, epsilon) of the budget-swept runs."""
    eps = _epsilons(runs)
    private = runs[eps.notna()].assign(epsilon=eps[eps.notna()])
    if private.empty:
        return pd.DataFrame()
    # The curve runs over epsilon: drop it from the variant label, keep the other overrides.
    label = private["strategy"].str.replace(r"privacy\.epsilon=[^\s\]]+ ?", "", regex=True)
    private = private.assign(strategy=label.str.replace(" []", "").str.replace(" ]", "]"))
    if "privacy/sigma" not in private:
        private["privacy/sigma"] = np.nan
    private["privacy/sigma"] = private["privacy/sigma"].fillna(0.0)
    grouped = private.groupby(["setting", "strategy", "epsilon"])
    columns = [*metrics, "privacy/sigma"]
    table = (
        grouped[columns]
        .mean()
        .add_suffix(" mean")
        .join(grouped[list(metrics)].std(ddof=1).add_suffix(" std"))
    )
    table["seeds"] = grouped.size()
    return table


def privacy_markdown(runs: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """The privacy-utility table and the reference strategies' numbers; "" without a sweep."""
    table = privacy_table(runs, metrics)
    if table.empty:
        return ""
    header = ["setting", "strategy", "epsilon", "sigma", "seeds", *metrics]
    lines = [
        "Privacy-utility (each user's released source representation is (epsilon, delta)-DP; "
        "mean ± std over noise seeds):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (setting, strategy, epsilon), row in table.iterrows():
        cells = [
            setting or "(default)",
            strategy,
            f"{epsilon:g}",
            f"{row['privacy/sigma mean']:.3g}",
        ]
        cells.append(str(int(row["seeds"])))
        for metric in metrics:
            std = row[f"{metric} std"]
            spread = f" ± {std:.4f}" if std == std else ""
            cells.append(f"{row[f'{metric} mean']:.4f}{spread}")
        lines.append("| " + " | ".join(cells) + " |")
    eps = _epsilons(runs)
    references = _references(runs, runs[eps.notna()])
    if not references.empty:
        lines += ["", "Without any release (same split):", ""]
        lines += ["| setting | strategy | seeds | " + " | ".join(metrics) + " |"]
        lines += ["|" + "---|" * (3 + len(metrics))]
        for (setting, strategy), part in references.groupby(["setting", "strategy"]):
            cells = [setting or "(default)", strategy, str(len(part))]
            for metric in metrics:
                std = part[metric].std(ddof=1)
                spread = f" ± {std:.4f}" if std == std else ""
                cells.append(f"{part[metric].mean():.4f}{spread}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_privacy(runs: pd.DataFrame, path: Path, metrics: tuple[str, ...]) -> bool:
    """The privacy-utility curve, one panel per metric: each budget-swept strategy's mean ±
    std against epsilon (log scale; epsilon = inf, no mechanism, at the right end) and the
    strategies without a release as horizontal lines. False when there is no budget sweep."""
    table = privacy_table(runs, metrics)
    if table.empty:
        return False
    plt = pyplot()
    budgets = sorted(e for e in table.index.get_level_values("epsilon").unique() if np.isfinite(e))
    right = (budgets[-1] * 2.5) if budgets else 1.0  # where epsilon = inf is drawn
    references = _references(runs, runs[_epsilons(runs).notna()])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for (setting, strategy), part in table.groupby(level=["setting", "strategy"]):
            eps = part.index.get_level_values("epsilon").to_numpy(dtype=float)
            mean = part[f"{metric} mean"].to_numpy()
            std = part[f"{metric} std"].fillna(0).to_numpy()
            label = strategy + (f" ({setting})" if setting else "")
            finite = np.isfinite(eps)
            order = np.argsort(eps[finite])
            line = ax.errorbar(
                eps[finite][order],
                mean[finite][order],
                yerr=std[finite][order],
                marker="o",
                capsize=3,
                label=label,
            )
            # No mechanism (epsilon = inf) is a point of its own, not the end of the curve.
            colour = line.lines[0].get_color()
            ax.errorbar(
                np.full((~finite).sum(), right),
                mean[~finite],
                yerr=std[~finite],
                marker="s",
                capsize=3,
                color=colour,
                linestyle="none",
            )
        for i, (strategy, part) in enumerate(references.groupby("strategy")):
            ax.axhline(part[metric].mean(), color=f"C{i + 3}", linestyle="--", label=strategy)
        ax.set_xscale("log")
        ax.set_xticks([*budgets, right], [f"{t:g}" for t in budgets] + ["inf"])
        ax.minorticks_off()
        ax.set_xlabel("epsilon (per user, delta fixed)")
        ax.set_title(metric)
        ax.set_ylabel("mean over seeds ± std")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True
