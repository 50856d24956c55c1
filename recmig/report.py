"""``recmig report <sweep dir>``: a multirun's metrics as a mean +- std table per strategy.

Reads every ``metrics.json`` below the folder together with the run's Hydra config
(``.hydra/config.yaml``), groups runs by strategy (and by any other option that differs
between runs, except the seed), and reports mean and standard deviation over seeds, with the
relative gain over ``target_only`` on the same configuration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

DEFAULT_METRICS = (
    "test/cold/ndcg@10",
    "test/cold/recall@10",
    "test/warm/ndcg@10",
    "test/warm/recall@10",
    "time/fit_s",
)


def collect(sweep_dir: Path) -> pd.DataFrame:
    """One row per finished run: strategy, seed, setting and flat metrics.

    ``setting`` joins the command-line overrides whose values differ between the runs (seed
    and strategy aside), e.g. ``data.scenario.cold_fraction=0.5``; it is empty for a sweep
    over strategies and seeds only.
    """
    rows, overrides = [], []
    for metrics_path in sorted(sweep_dir.rglob("metrics.json")):
        run = metrics_path.parent
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        listed = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        overrides.append(
            dict(
                o.split("=", 1)
                for o in listed
                if not o.startswith(("seed=", "strategy=", "hydra."))
            )
        )
        rows.append(
            {
                "strategy": cfg.strategy.name,
                "seed": cfg.seed,
                "run": str(run),
                **json.loads(metrics_path.read_text()),
            }
        )
    if not rows:
        raise ValueError(f"{sweep_dir}: no metrics.json found below it (is it a sweep folder?)")
    keys = sorted({k for o in overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    settings = [" ".join(f"{k}={o[k]}" for k in varying if k in o) for o in overrides]
    return pd.DataFrame(rows).assign(setting=settings)


def summarize(runs: pd.DataFrame, metrics: tuple[str, ...] = DEFAULT_METRICS) -> pd.DataFrame:
    """mean, std and seed count per (setting, strategy); gain vs target_only in percent."""
    missing = [m for m in metrics if m not in runs.columns]
    if missing:
        raise ValueError(f"metrics {missing} are in no run; available: {sorted(runs.columns)}")
    grouped = runs.groupby(["setting", "strategy"])[list(metrics)]
    table = grouped.mean().add_suffix(" mean").join(grouped.std(ddof=1).add_suffix(" std"))
    table["seeds"] = grouped.size()
    for metric in metrics:
        if metric.startswith("time/"):
            continue
        base = table[f"{metric} mean"].xs("target_only", level="strategy", drop_level=False)
        base = base.droplevel("strategy").reindex(table.index.get_level_values("setting"))
        table[f"{metric} gain %"] = 100 * (table[f"{metric} mean"].to_numpy() / base.to_numpy() - 1)
    return table


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    header = ["setting", "strategy", "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (setting, strategy), row in table.iterrows():
        cells = [setting or "(default)", strategy, str(int(row["seeds"]))]
        for metric in metrics:
            cell = f"{row[f'{metric} mean']:.4f} ± {row[f'{metric} std']:.4f}"
            if metric.startswith("time/"):
                cell = f"{row[f'{metric} mean']:.0f} ± {row[f'{metric} std']:.0f}"
            elif f"{metric} gain %" in row and strategy != "target_only":
                cell += f" ({row[f'{metric} gain %']:+.1f}%)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recmig report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--out", type=Path, help="write results.md and results.csv here")
    args = parser.parse_args(argv)
    metrics = tuple(args.metrics)
    runs = collect(args.sweep_dir)
    table = summarize(runs, metrics)
    markdown = to_markdown(table, metrics)
    print(markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(markdown + "\n")
        runs.to_csv(args.out / "runs.csv", index=False)
        table.to_csv(args.out / "results.csv")
