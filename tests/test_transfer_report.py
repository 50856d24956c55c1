"""Report sections on how a transfer happened: domain weights and the privacy-utility curve."""

from __future__ import annotations

import json

import pandas as pd

from recmig.report.transfer import plot_privacy, privacy_markdown, weights_markdown

METRICS = ("test/cold/ndcg@10", "test/warm/ndcg@10")


def run(strategy, seed, overrides, cold, warm=0.1, **extra):
    return {
        "setting": "",
        "strategy": strategy,
        "seed": seed,
        "overrides": json.dumps(overrides),
        "test/cold/ndcg@10": cold,
        "test/warm/ndcg@10": warm,
        **extra,
    }


def test_privacy_curve_groups_budgets_and_keeps_references_apart(tmp_path):
    rows = [
        run(
            "ridge_transfer [privacy.epsilon=1]",
            s,
            {"privacy.epsilon": "1"},
            0.40 + s / 100,
            **{"privacy/sigma": 7.5},
        )
        for s in (0, 1, 2)
    ]
    rows += [run("ridge_transfer [privacy.epsilon=.inf]", 0, {"privacy.epsilon": ".inf"}, 0.6)]
    rows += [run("popularity", 0, {}, 0.43), run("target_only", 0, {}, 0.42)]
    runs = pd.DataFrame(rows)
    markdown = privacy_markdown(runs, METRICS)
    # One row per budget, the epsilon out of the label, mean ± std over the three seeds.
    assert "| (default) | ridge_transfer | 1 | 7.5 | 3 | 0.4100 ± 0.0100 |" in markdown
    assert "| (default) | ridge_transfer | inf | 0 | 1 | 0.6000 |" in markdown
    references = markdown.split("Without any release")[1]
    assert "| (default) | popularity | 1 | 0.4300 |" in references
    assert "ridge_transfer" not in references
    assert plot_privacy(runs, tmp_path / "privacy.png", METRICS)
    assert (tmp_path / "privacy.png").read_bytes()[:4] == b"\x89PNG"
    without = runs[~runs["strategy"].str.startswith("ridge")]
    assert privacy_markdown(without, METRICS) == ""
    assert not plot_privacy(without, tmp_path / "none.png", METRICS)


def test_domain_weights_table_shows_each_domain_per_group():
    weights = {
        f"test/{group}/weight/{domain}/{stat}": value
        for group, domain, value in (
            ("cold", "drama", 0.7),
            ("cold", "target", 0.0),
            ("warm", "drama", 0.2),
            ("warm", "target", 0.8),
        )
        for stat in ("mean", "p10", "p50", "p90")
    }
    runs = pd.DataFrame(
        [run("fusion", s, {}, 0.3, **weights, **{"fusion/weight/drama": 0.25}) for s in (0, 1)]
        + [run("ease", 0, {}, 0.5)]
    )
    table = weights_markdown(runs)
    assert (
        "| (default) | fusion | drama | 0.700 [0.700, 0.700] | 0.200 [0.200, 0.200] | 0.250 |"
        in table
    )
    assert (
        "| (default) | fusion | target | 0.000 [0.000, 0.000] | 0.800 [0.800, 0.800] |  |" in table
    )
    assert "ease" not in table
    assert weights_markdown(runs[runs["strategy"] == "ease"].dropna(axis=1)) == ""
