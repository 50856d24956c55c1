"""Non-learned rating predictors on the exact splits of the rating experiment, as a yardstick.

A transfer strategy's cold-user RMSE means little alone: the first three are what a cold user
gets from the target domain's training ratings without any knowledge of the user, the last is
the simplest transfer there is (a generous rater stays generous).

    global mean   every prediction is the mean target training rating (recmig's offset);
    item mean     the item's mean target training rating, shrunk towards the domain mean
                  (``--shrinkage`` pseudo-ratings): ``rating_baseline=item``, the offset every
                  recmig rating model starts from;
    user + item   warm users only: item mean plus the user's mean residual on their own
                  target training ratings (cold users have none: it equals the item mean);
    source bias   item mean plus the user's mean residual on their source-domain training
                  ratings (against the source items' own shrunk means), for every user.

MAE and RMSE are interaction-level over the held-out test ratings of each group, as
``recmig train`` reports them. Run from the repository root:

    python experiments/cold_start_rating_ml1m/reference_baselines.py [--out FILE.csv]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from hydra.utils import instantiate

from recmig.config import compose_config
from recmig.data.scenario import COLD_TEST, SOURCE, TARGET, build_scenario
from recmig.train import rating_baselines


def predictions(scenario, shrinkage: float) -> dict[str, pd.DataFrame]:
    """Held-out test ratings of each group with every baseline's prediction beside them."""
    rated = scenario.train.dropna(subset=["rating"])
    mean = float(rated.loc[rated["domain"] == TARGET, "rating"].mean())
    item_mean = rating_baselines(scenario, "item", shrinkage)

    def user_bias(domain: int) -> pd.Series:
        """Each user's mean residual over their ratings in ``domain``, shrunk towards 0."""
        part = rated[rated["domain"] == domain]
        residual = (part["rating"] - item_mean[part["item"]]).groupby(part["user"])
        return residual.sum() / (residual.count() + shrinkage)

    target_bias, source_bias = user_bias(TARGET), user_bias(SOURCE)
    groups = {
        "cold": scenario.cold[scenario.cold["group"] == COLD_TEST],
        "warm": scenario.warm[scenario.warm["split"] == "test"],
    }
    out = {}
    for group, held_out in groups.items():
        held_out = held_out.dropna(subset=["rating"])
        items = item_mean[held_out["item"].to_numpy()]
        out[group] = pd.DataFrame(
            {
                "rating": held_out["rating"].to_numpy(),
                "global mean": mean,
                "item mean": items,
                "user + item": items + held_out["user"].map(target_bias).fillna(0.0).to_numpy(),
                "source bias": items + held_out["user"].map(source_bias).fillna(0.0).to_numpy(),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold-fractions", nargs="+", type=float, default=[0.2, 0.5, 0.8])
    parser.add_argument(
        "--shrinkage",
        type=float,
        help="pseudo-ratings of the item and user means (default: the run config's "
        "rating_shrinkage, what the models' baselines use)",
    )
    parser.add_argument("--out", help="also write the numbers to this CSV")
    args = parser.parse_args()
    rows = []
    for beta in args.cold_fractions:
        # One split per beta (data.scenario.seed): the run seed changes training only.
        overrides = ["experiment=cold_start_rating_ml1m", f"data.scenario.cold_fraction={beta}"]
        cfg = compose_config(overrides)
        scenario = build_scenario(instantiate(cfg.data.dataset), instantiate(cfg.data.scenario))
        shrinkage = cfg.rating_shrinkage if args.shrinkage is None else args.shrinkage
        for group, table in predictions(scenario, shrinkage).items():
            for baseline in ("global mean", "item mean", "user + item", "source bias"):
                error = table[baseline] - table["rating"]
                rows.append(
                    {
                        "beta": beta,
                        "group": group,
                        "baseline": baseline,
                        "ratings": len(error),
                        "mae": float(error.abs().mean()),
                        "rmse": float(np.sqrt((error**2).mean())),
                    }
                )
    results = pd.DataFrame(rows)
    if args.out:
        results.to_csv(args.out, index=False)
    print(results.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
