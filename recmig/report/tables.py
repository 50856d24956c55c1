"""The Markdown tables of ``recmig report``, from the tables :mod:`recmig.report.statistics`
computes: a cell is ``mean ± std (gain %, p-value)``; a p-value of the t-test fallback is marked
"over seeds"."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from recmig.report.runs import UnfinishedJob
from recmig.report.statistics import DEFAULT_METRICS, headline_metric, wide_by_value


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


def slices_markdown(sliced: pd.DataFrame, column: str = "ndcg@10") -> str:
    if sliced.empty:
        return ""
    blocks = []
    for (group, attribute), part in sliced.groupby(level=["group", "attribute"]):
        wide = wide_by_value(part["mean"].droplevel(["group", "attribute"]), attribute)
        users = wide_by_value(part["users"].droplevel(["group", "attribute"]), attribute)
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


def unfinished_markdown(jobs: Sequence[UnfinishedJob]) -> str:
    """The jobs missing from the tables, each with its overrides; "" when every job finished."""
    if not jobs:
        return ""
    lines = [
        f"Not in these tables: {len(jobs)} job(s) without metrics.json (failed, or still "
        "running; a failed job's error is in the sweep's output):",
        "",
    ]
    lines += [f"- {job.folder}: {' '.join(job.overrides)}" for job in jobs]
    return "\n".join(lines)
