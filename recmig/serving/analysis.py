"""What a recommender is worth in use: streaming evaluation and the explanation deletion test.

Streaming evaluation (:func:`streaming_evaluation`) replays each test user's held-out target
interactions in time order (a cold test user's whole target history; a warm user's validation
then test item, which is time order under the leave-one-out split) and, before each event,
ranks the target catalogue for it twice: with every earlier held-out event folded into the
history (:meth:`Recommender.update`'s view, "updated") and with the history as it was at the
end of training ("frozen"). Items consumed earlier are excluded from both rankings, so the
difference is the interest update alone. The first event of a user is scored identically by
both; the gain is on the later ones. Each event is ranked in the list the recommender would
show and scored as the evaluator scores (:mod:`recmig.evaluation.ranking`: the popularity
fallback for a history without signal, ties in catalogue order, its NDCG).

The deletion test (:func:`deletion_test`) checks that explanations are faithful: for a user's
top-1 item, removing the ``removed`` history items that explain it best must lower its score
(and rank) more than removing as many random history items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recmig.data.scenario import COLD_TEST
from recmig.evaluation.ranking import metrics_of_top, rank_in_list, top_items, with_fallback
from recmig.serving.recommender import Recommender


def listed(rec: Recommender, scores: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """``scores`` as the recommender lists them: a row without signal ranked by the target
    domain's popularity (:func:`with_fallback`, the evaluator's and the recommender's rule)."""
    return with_fallback(scores, excluded, rec.tensors.target_popularity)[0]


def next_item_ndcg(
    scores: torch.Tensor, excluded: torch.Tensor, positions: torch.Tensor, k: int
) -> torch.Tensor:
    """(B,) NDCG@k of each row's list (:func:`top_items`, the evaluator's ranking and ties) for
    one relevant item, catalogue position ``positions[b]``."""
    relevant = torch.zeros_like(scores, dtype=torch.bool)
    relevant[torch.arange(len(positions)), positions] = True
    return metrics_of_top(top_items(scores, excluded, k), relevant, (k,))[f"ndcg@{k}"]


def held_out_users(rec: Recommender) -> pd.DataFrame:
    """``user`` (index), ``group`` and ``events``: each test user's held-out target items in
    time order (the scenario keeps interactions sorted by user and time)."""
    scenario = rec.scenario
    cold = scenario.cold[scenario.cold["group"] == COLD_TEST]
    order = {"val": 0, "test": 1}
    warm = scenario.warm.assign(order=scenario.warm["split"].map(order))
    warm = warm.sort_values(["user", "order"], kind="stable")
    rows = [
        (user, group, items.tolist())
        for group, frame in (("cold", cold), ("warm", warm))
        for user, items in frame.groupby("user", sort=True)["item"]
    ]
    return pd.DataFrame(rows, columns=["user", "group", "events"])


def sample_per_group(users: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """At most ``size`` random rows of each ``group``, in group and user order."""
    parts = [g.sample(min(len(g), size), random_state=seed) for _, g in users.groupby("group")]
    return pd.concat(parts).sort_values(["group", "user"], ignore_index=True)


def streaming_evaluation(
    rec: Recommender,
    k: int = 10,
    max_events: int = 50,
    max_users: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> pd.DataFrame:
    """One row per replayed event: ``user``, ``group``, ``step`` (0-based), and NDCG@k of the
    event ranked with updated and with frozen interest. ``max_events``: the first events of a
    user replayed; ``max_users``: a random sample of test users per group (all when None)."""
    users = held_out_users(rec)
    if max_users is not None:
        users = sample_per_group(users, max_users, seed)
    states, starts, meta = [], [], []
    for row in users.itertuples(index=False):
        start = rec.training_history(rec.scenario.user_ids[row.user])
        starts.append(start)
        events = [rec.catalog_position(t) for t in row.events[:max_events]]
        history = start.copy()
        for step, token in enumerate(row.events[:max_events]):
            if token in history.tokens:  # a re-consumption is excluded from both rankings
                history.add(token)
                continue
            states.append(history.copy())
            meta.append((row.user, row.group, step, events[step], len(starts) - 1))
            history.add(token)
    # A user's frozen history is the same for all their events: scored once per user.
    frozen = (
        torch.cat(
            [rec.scores(starts[b : b + batch_size])[0] for b in range(0, len(starts), batch_size)]
        )
        if starts
        else torch.zeros(0, len(rec.catalog))
    )
    records = []
    for begin in range(0, len(states), batch_size):
        chunk = slice(begin, begin + batch_size)
        updated_scores, excluded = rec.scores(states[chunk])
        frozen_scores = frozen[torch.as_tensor([m[4] for m in meta[chunk]])]
        positions = torch.as_tensor([m[3] for m in meta[chunk]])
        # Both rankings skip every target item the user has had by then, and rank as the
        # recommender lists (fallback, ties in catalogue order).
        columns = []
        for scores in (listed(rec, updated_scores, excluded), listed(rec, frozen_scores, excluded)):
            columns.append(rank_in_list(scores, excluded, positions).tolist())
            columns.append(next_item_ndcg(scores, excluded, positions, k).tolist())
        for (user, group, step, _, _), *values in zip(meta[chunk], *columns, strict=True):
            records.append((user, group, step, *values))
    names = ["rank_updated", "ndcg_updated", "rank_frozen", "ndcg_frozen"]
    table = pd.DataFrame(records, columns=["user", "group", "step", *names])
    return table[["user", "group", "step", "rank_updated", "rank_frozen", *names[1::2]]]


def summarise_streaming(table: pd.DataFrame) -> dict[str, float]:
    """Mean NDCG of the next event per group, with and without updates, over the events
    after a user's first (where the two differ), and over events 2-5 / 6+ of cold users."""
    out = {}
    later = table[table["step"] > 0]
    for group, part in later.groupby("group"):
        out[f"{group}/events"] = float(len(part))
        out[f"{group}/ndcg_updated"] = float(part["ndcg_updated"].mean())
        out[f"{group}/ndcg_frozen"] = float(part["ndcg_frozen"].mean())
        out[f"{group}/gain"] = out[f"{group}/ndcg_updated"] - out[f"{group}/ndcg_frozen"]
    cold = later[later["group"] == "cold"]
    for name, rows in (("steps1-4", cold["step"] <= 4), ("steps5+", cold["step"] > 4)):
        if rows.any():
            out[f"cold/{name}/ndcg_updated"] = float(cold.loc[rows, "ndcg_updated"].mean())
            out[f"cold/{name}/ndcg_frozen"] = float(cold.loc[rows, "ndcg_frozen"].mean())
    return out


def deletion_test(
    rec: Recommender,
    removed: int = 3,
    max_users: int = 300,
    seed: int = 0,
    users: Sequence[int] | None = None,
) -> pd.DataFrame:
    """One row per test user with more than ``removed`` distinct history items (a random
    sample of ``max_users`` per group): the top-1 item's score drop and new rank after removing
    its ``removed`` best-explaining history items (``explained``) and ``removed`` random ones."""
    rng = np.random.default_rng(seed)
    chosen = held_out_users(rec)
    if users is not None:
        chosen = chosen[chosen["user"].isin(users)]
    records = []
    for group, part in chosen.groupby("group"):
        order = rng.permutation(len(part))
        taken = 0
        for row in part.iloc[order].itertuples(index=False):
            if taken >= max_users:
                break
            history = rec.known_history(rec.scenario.user_ids[row.user])
            items = list(dict.fromkeys(history.tokens))
            if len(items) <= removed:
                continue
            top = rec.top_k([history], [row.user], 1)[0]
            if not top:
                continue
            position = rec.catalog_position(rec.token_of[top[0]["item_id"]])
            contributions, tokens = rec.attributions(history, np.array([position]))
            best = [tokens[j] for j in np.argsort(-contributions[:, 0], kind="stable")[:removed]]
            random = list(rng.choice(np.asarray(tokens), size=removed, replace=False))
            variants = [history, history.without(best), history.without(random)]
            scores, excluded = rec.scores(variants)
            # Ranked among the full history's candidates: a removed target item must not come
            # back as a competitor (it would favour removing the items that explain the top).
            index, candidates = torch.full((3,), position), excluded[:1].expand(3, -1)
            ranks = rank_in_list(listed(rec, scores, candidates), candidates, index).tolist()
            values = scores[:, position].numpy()
            records.append(
                (
                    row.user,
                    group,
                    len(items),
                    values[0],
                    values[0] - values[1],
                    values[0] - values[2],
                    ranks[1],
                    ranks[2],
                )
            )
            taken += 1
    columns = [
        "user",
        "group",
        "history_items",
        "score",
        "drop_explained",
        "drop_random",
        "rank_explained",
        "rank_random",
    ]
    return pd.DataFrame(records, columns=columns)


def summarise_deletion(table: pd.DataFrame) -> dict[str, float]:
    """Per group: mean score drops, median ranks after removal, and the share of users whose
    explained removal lowered the score more than the random one."""
    out = {}
    for group, part in table.groupby("group"):
        out[f"{group}/users"] = float(len(part))
        out[f"{group}/drop_explained"] = float(part["drop_explained"].mean())
        out[f"{group}/drop_random"] = float(part["drop_random"].mean())
        out[f"{group}/median_rank_explained"] = float(part["rank_explained"].median())
        out[f"{group}/median_rank_random"] = float(part["rank_random"].median())
        out[f"{group}/explained_wins"] = float(
            (part["drop_explained"] > part["drop_random"]).mean()
        )
    return out


def worked_examples(
    rec: Recommender, users: int = 3, k: int = 3, per_item: int = 2, shown: int = 5, seed: int = 0
) -> str:
    """Markdown: for a few random cold test users, their last ``shown`` source items, the
    top-``k`` target items and each one's best ``per_item`` explaining history items."""
    cold = held_out_users(rec)
    cold = cold[cold["group"] == "cold"]
    picked = cold.sample(min(users, len(cold)), random_state=seed)["user"]
    lines = []
    for user in sorted(picked):
        user_id = str(rec.scenario.user_ids[user])
        history = rec.known_history(user_id)
        titles = [rec.titles[t - 1] for t in history.tokens[-shown:]]
        more = len(history.tokens) - len(titles)
        lead = f"{more} earlier items, then " if more > 0 else ""
        lines.append(f"- user {user_id} (cold; source history: {lead}{'; '.join(titles)})")
        explained = rec.explain(user=user_id, k=k, per_item=per_item)
        for (rank, title), rows in explained.groupby(["rank", "title"], sort=True):
            causes = [
                f"{c.cause_title} ({c.contribution:+.3g})"
                for c in rows.dropna(subset=["cause_item_id"]).itertuples(index=False)
            ]
            because = f" because of {', '.join(causes)}" if causes else " (no history item)"
            lines.append(f"  {rank}. {title}{because}")
    return "\n".join(lines)


def _to_parquet(table: pd.DataFrame, path: Path) -> None:
    table.to_parquet(path, index=False)


def run_label(run_dir: Path) -> tuple[str, int]:
    """(strategy, seed) of a finished run, from its Hydra config."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(run_dir) / ".hydra" / "config.yaml")
    return str(cfg.strategy.name), int(cfg.seed)


def over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every numeric column, per strategy (input order kept)."""
    numbers = rows.drop(columns=["run", "seed"])
    grouped = numbers.groupby("strategy", sort=False)
    table = grouped.mean().add_suffix(" mean").join(grouped.std(ddof=1).add_suffix(" std"))
    table.insert(0, "seeds", grouped.size())
    names = numbers.columns.drop("strategy")
    order = [c for name in names for c in (f"{name} mean", f"{name} std")]
    return table[["seeds", *order]].reset_index()


def stream_main(argv: list[str]) -> None:
    """``recmig stream``: see :func:`main`."""
    main("stream", argv)


def faithfulness_main(argv: list[str]) -> None:
    """``recmig faithfulness``: see :func:`main`."""
    main("faithfulness", argv)


def main(command: str, argv: list[str]) -> None:
    """``recmig stream`` / ``recmig faithfulness``: analyse finished runs, write each run's
    summary (``streaming.json`` / ``faithfulness.json``, per-event or per-user rows as Parquet
    beside it), and print the mean and std over seeds per strategy."""
    import argparse

    from recmig.atomic import write_atomic, write_json_atomic
    from recmig.errors import USER_ERRORS, exit_with_error

    streaming = command == "stream"
    parser = argparse.ArgumentParser(
        prog=f"recmig {command}",
        description=(__doc__ or "").split("\n\n")[1 if streaming else 2],
    )
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument(
        "--max-users",
        type=int,
        default=None if streaming else 300,
        help="random test users per group (default: all)"
        if streaming
        else "test users per group (default 300)",
    )
    if streaming:
        parser.add_argument(
            "--max-events",
            type=int,
            default=50,
            help="first held-out events replayed per user (default 50)",
        )
    parser.add_argument("--seed", type=int, default=0, help="user sample and random deletions")
    parser.add_argument("--csv", type=Path, help="also write the per-run summaries here")
    args = parser.parse_args(argv)
    name = "streaming" if streaming else "faithfulness"
    rows = []
    for run_dir in args.run_dirs:
        try:
            rec = Recommender.from_run(run_dir)
        except USER_ERRORS as err:
            exit_with_error(err)
        if streaming:
            table = streaming_evaluation(
                rec, max_events=args.max_events, max_users=args.max_users, seed=args.seed
            )
            summary = summarise_streaming(table)
        else:
            table = deletion_test(rec, max_users=args.max_users, seed=args.seed)
            summary = summarise_deletion(table)
        write_atomic(run_dir / f"{name}.parquet", partial(_to_parquet, table))
        write_json_atomic(run_dir / f"{name}.json", summary)
        strategy, seed = run_label(run_dir)
        rows.append({"run": str(run_dir), "strategy": strategy, "seed": seed, **summary})
        print(f"{run_dir}: {strategy} seed {seed}: {json.dumps(summary)}", flush=True)
    frame = pd.DataFrame(rows)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.csv, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(over_seeds(frame).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
