"""Validation grid of closed-form strategies on one scenario, built once (seconds per point).

What `recmig train -m ... strategy.<option>=a,b,c` would select, without rebuilding the
scenario and the text features for every point: each point is fitted with the strategy class
`recmig train` builds and scored on the *validation* users only, with the evaluator's own
metric functions (full ranking, training items excluded). The chosen values go under `tuned:`
in the experiment config; the table this prints goes in the experiment's README.

    python experiments/tools/closed_form_grid.py "experiment=new_items_ml1m" \
        "text_prior:prior_weight=0.5,1,2:text_lam=0.3,3,30" "ridge_map:map_lam=300,1000,3000"

Columns: val NDCG@10 of cold and warm users, their mean (the selection metric), and where the
scenario has new items, NDCG@10 over the new items alone and their share of top-10 slots.
"""

from __future__ import annotations

import itertools
import sys
import time

import torch

from recmig.config import compose_config
from recmig.evaluation.ranking import NEW_ITEMS, metrics_of_top, new_item_metrics, top_items
from recmig.train import build_run, build_strategy


def validation_ndcg(strategy, datamodule, k: int = 10) -> dict[str, float]:
    groups: dict[str, list[torch.Tensor]] = {"cold": [], "warm": [], "new": [], "share": []}
    for batch in datamodule.eval_data["val"]:
        with torch.no_grad():
            scores = strategy.target_scores(batch)
        top = top_items(scores, batch["excluded"], k)
        ndcg = metrics_of_top(top, batch["relevant"], (k,))[f"ndcg@{k}"]
        groups["cold"].append(ndcg[batch["is_cold"]])
        groups["warm"].append(ndcg[~batch["is_cold"]])
        if NEW_ITEMS in batch:  # the evaluator's own new_items group
            new = new_item_metrics(
                scores, top, batch["relevant"], batch["excluded"], batch[NEW_ITEMS], (k,)
            )
            ndcg_new = new[f"ndcg@{k}"]
            groups["new"].append(ndcg_new[~torch.isnan(ndcg_new)])
            groups["share"].append(new[f"share@{k}"])
    out = {g: torch.cat(v).mean().item() for g, v in groups.items() if v and torch.cat(v).numel()}
    present = [out[g] for g in ("cold", "warm") if g in out]
    out["mean"] = sum(present) / len(present)
    return out


def grid_points(spec: str) -> tuple[str, list[dict[str, str]]]:
    """ "name:opt=a,b:opt2=c" -> the strategy name and every combination of its options."""
    name, *options = spec.split(":")
    keys = [o.split("=", 1)[0] for o in options]
    values = [o.split("=", 1)[1].split(",") for o in options]
    return name, [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def main(argv: list[str]) -> None:
    # A grid names a strategy before any "=" ("ease", "ease:lam=1,2"); the rest are overrides.
    specs = [a for a in argv if "=" not in a.split(":")[0]]
    overrides = [a for a in argv if a not in specs]
    # Built for a closed-form strategy, so evaluation batches carry the sparse histories.
    cfg = compose_config(["logger=none", *overrides, "strategy=ease"])
    parts = build_run(cfg)
    tensors = parts.datamodule.tensors
    print("| strategy | options | val cold | val warm | val mean | new items | share | fit s |")
    print("|---|---|---|---|---|---|---|---:|")
    for spec in specs:
        name, points = grid_points(spec)
        for point in points:
            run_cfg = compose_config(
                [
                    "logger=none",
                    *overrides,
                    f"strategy={name}",
                    *(f"strategy.{k}={v}" for k, v in point.items()),
                ]
            )
            strategy = build_strategy(run_cfg, tensors)
            start = time.perf_counter()
            strategy.fit(tensors.training_matrix())
            seconds = time.perf_counter() - start
            r = validation_ndcg(strategy, parts.datamodule)
            shown = " ".join(f"{k}={v}" for k, v in point.items())
            cells = [
                f"{r[g]:.4f}" if g in r else "" for g in ("cold", "warm", "mean", "new", "share")
            ]
            print(f"| {name} | {shown} | {' | '.join(cells)} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
