"""One job of a real Hydra multirun fails with a user error: the sweep finishes the other jobs,
fails at its end, and `recmig report` reports the finished jobs and names the failed one."""

from __future__ import annotations

import json

import pandas as pd
from test_cli import recmig

FRACTIONS = ("0.3", "1.5", "0.5")
"""The swept cold fractions; 1.5 is out of [0, 1), which only the middle job's scenario sees."""


def test_a_failing_job_leaves_the_others_finished_and_reported(tmp_path, data):
    inter = data.interactions.merge(data.items[["item_id", "genre"]], on="item_id")
    inter["domain"] = inter.pop("genre").str.split(",").str[0]
    inter.to_parquet(tmp_path / "inter.parquet")
    data.items.to_csv(tmp_path / "items.csv", index=False)
    sweep = tmp_path / "sweep"
    result = recmig(
        "train",
        "-m",
        "data=custom_files",
        f"data.dataset.interactions={tmp_path / 'inter.parquet'}",
        f"data.dataset.items={tmp_path / 'items.csv'}",
        "data.scenario.source_domains=[Books]",
        "data.scenario.target_domains=[Films]",
        f"data.scenario.cold_fraction={','.join(FRACTIONS)}",
        "strategy=popularity",
        "encoder=id",
        "logger=none",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode != 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("recmig: error:")]
    assert len(errors) == 1 and "cold_fraction must be in [0, 1), got 1.5" in errors[0], errors
    jobs = {fraction: sweep / f"{num}_popularity_seed0" for num, fraction in enumerate(FRACTIONS)}
    assert all((job / ".hydra" / "config.yaml").is_file() for job in jobs.values())
    assert not (jobs["1.5"] / "metrics.json").exists()
    finished = {f: json.loads((jobs[f] / "metrics.json").read_text()) for f in ("0.3", "0.5")}

    out = tmp_path / "report"
    report = recmig("report", str(sweep), "--out", str(out), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    named = f"- {jobs['1.5']}: "
    for text in (report.stdout, (out / "results.md").read_text()):
        failed = [line for line in text.splitlines() if line.startswith("- ")]
        assert len(failed) == 1 and failed[0].startswith(named), failed
        assert "data.scenario.cold_fraction=1.5" in failed[0]
        for fraction, metrics in finished.items():  # one row per finished setting, one seed
            row = next(
                line
                for line in text.splitlines()
                if line.startswith(f"| data.scenario.cold_fraction={fraction} | popularity |")
            )
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert cells[2] == "1"
            assert f"{metrics['test/cold/ndcg@10']:.4f}" in cells
        assert "cold_fraction=1.5 |" not in text
    assert sorted(pd.read_csv(out / "runs.csv")["setting"]) == [
        "data.scenario.cold_fraction=0.3",
        "data.scenario.cold_fraction=0.5",
    ]
