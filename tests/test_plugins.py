"""A third-party strategy plugin, installed with pip, is discovered, configured and trained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "recmig-example-plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """pip-install the example plugin into its own folder (the project venv stays untouched)."""
    site = tmp_path_factory.mktemp("plugin-site")
    source = tmp_path_factory.mktemp("plugin-source") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)  # pip builds in the source tree: keep the repo clean
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return site


def run_with_plugin(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "recmig.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_installed_plugin_is_listed(plugin_site, tmp_path):
    result = run_with_plugin(plugin_site, "strategies", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "learned_popularity" in result.stdout
    assert (
        "recmig-example-plugin: recmig_example_plugin.strategy:LearnedPopularity" in result.stdout
    )


def test_installed_plugin_config_joins_the_strategy_group_and_trains(plugin_site, tmp_path):
    out = tmp_path / "run"
    result = run_with_plugin(
        plugin_site,
        "train",
        "strategy=learned_popularity",
        "data=ml100k_genres",
        "encoder=id",
        "trainer.max_epochs=1",
        "logger=csv",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # Trained: far above a random ranking of ML-100K's ~1000 target items (NDCG@10 ~ 0.01).
    assert metrics["test/cold/ndcg@10"] > 0.1 and metrics["test/warm/ndcg@10"] > 0.03
    # The plugin's score is one logit per item, the same for every user: any two items in
    # two users' top lists (their own seen items left out) come in the same order.
    import pandas as pd

    before: set[tuple[str, str]] = set()
    for top in pd.read_parquet(out / "test_users.parquet")["top"]:
        before.update((a, b) for i, a in enumerate(top) for b in top[i + 1 :])
    assert before and not any((b, a) in before for a, b in before)


def test_without_the_plugin_its_option_is_unknown(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "recmig.cli", "train", "strategy=learned_popularity", "logger=none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "learned_popularity" in result.stderr
