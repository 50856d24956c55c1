"""The figures of ``recmig report``: the headline metrics per strategy and setting
(``results.png``) and the per-user slices (``slices.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recmig.atomic import pyplot, save_figure
from recmig.report.statistics import RATING_METRICS, wide_by_value


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
        wide = wide_by_value(
            part.xs((group, attribute), level=("group", "attribute"))["mean"], attribute
        )
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
