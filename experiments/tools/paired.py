"""Paired Wilcoxon tests between two rows of a report: a text strategy against its ablation.

    python experiments/tools/paired.py experiments/new_items_ml1m/runs.csv \
        "text_prior" "ridge_transfer [strategy.text_weight=0]" \
        --metrics test/cold/ndcg@10 test/warm/ndcg@10 test/new_items/ndcg@10

For every setting where both rows ran: the means over their runs (splits and seeds), the
change, and the paired Wilcoxon signed-rank p over test users (each user's metric averaged
over the runs where they were evaluated, as `recmig report` does; both rows must have run the
same splits). Run folders must still exist: the per-user rows are read from them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recmig.report.runs import collect
from recmig.report.statistics import paired_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="sweep folders or runs.csv")
    parser.add_argument("strategy", help="the row tested (as the report labels it)")
    parser.add_argument("baseline", help="the row it is compared with")
    parser.add_argument("--metrics", nargs="+", default=["test/cold/ndcg@10", "test/warm/ndcg@10"])
    args = parser.parse_args()
    runs = collect(args.sources)
    for label in (args.strategy, args.baseline):
        if label not in set(runs["strategy"]):
            raise SystemExit(f"paired.py: no row {label!r}; rows: {sorted(set(runs['strategy']))}")
    print(f"| setting | metric | {args.strategy} | {args.baseline} | change | p |")
    print("|---|---|---|---|---|---|")
    for setting, part in runs.groupby("setting"):
        ours = part[part["strategy"] == args.strategy]
        base = part[part["strategy"] == args.baseline]
        if ours.empty or base.empty:
            continue
        for metric in args.metrics:
            if metric not in part.columns:
                continue
            a, b = ours[metric].mean(), base[metric].mean()
            p, test = paired_test(ours, base, metric)
            change = f"{100 * (a / b - 1):+.1f}%" if b else "n/a"
            shown = "<0.001" if p < 0.001 else f"{p:.2g}"
            if test == "seeds":
                shown += " (t over seeds)"
            name = setting or "(default)"
            print(f"| {name} | {metric} | {a:.4f} | {b:.4f} | {change} | {shown} |")


if __name__ == "__main__":
    main()
