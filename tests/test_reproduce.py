"""`recmig reproduce`: every committed experiment's quick version reproduces its recorded
numbers, and a number outside its tolerance fails the command."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_cli import recmig
from test_report import make_run

from recmig.report import collect
from recmig.reproduce import compare, load_spec, main, record

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/reproduce.yaml"))


def test_every_experiment_has_a_quick_and_a_full_version():
    assert {"p1_sasrec_ml1m", "cold_start_ml1m"} <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        quick = load_spec(ROOT / "experiments" / name, "quick")
        assert quick["sweep"] and quick["expected"]  # CI checks every quick version
        full = load_spec(ROOT / "experiments" / name, "full")
        assert full["sweep"]  # (expected may be empty: not measured in full yet)
        assert all(row["mean"] != 0.0 for row in full["expected"])  # no placeholders


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_version_reproduces_and_a_deviation_fails(name, tmp_path):
    sweep = tmp_path / "sweep"
    result = recmig("reproduce", name, "--quick", "--out", str(sweep), cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "all numbers within tolerance" in result.stdout
    assert (sweep / "results.md").exists()

    spec = tmp_path / "spec"
    shutil.copytree(ROOT / "experiments" / name, spec)
    text = (spec / "reproduce.yaml").read_text()
    quick = text.index("\nquick:")
    (spec / "reproduce.yaml").write_text(
        text[:quick] + text[quick:].replace("mean: ", "mean: 9", 1)  # 0.34 -> 90.34
    )
    checked = recmig("reproduce", str(spec), "--quick", "--from", str(sweep), cwd=tmp_path)
    assert checked.returncode == 1
    assert "1 number(s) outside their tolerance" in checked.stderr


def test_missing_spec_and_section_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="reproduce.yaml"):
        load_spec(tmp_path, "quick")
    (tmp_path / "reproduce.yaml").write_text("full:\n  sweep: []\n  expected: []\n")
    with pytest.raises(ValueError, match="no 'quick' section"):
        load_spec(tmp_path, "quick")
    (tmp_path / "reproduce.yaml").write_text(
        "quick:\n  sweep: []\n  expected:\n    - {strategy: a, metric: m, mean: 1}\n"
    )
    with pytest.raises(ValueError, match=r"quick.expected\[0\] lacks \['tolerance'\]"):
        load_spec(tmp_path, "quick")


def test_compare_and_record_keep_the_spec_readable(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in range(2):
        make_run(sweep, f"t{seed}", "target_only", seed, [], np.full(40, 0.2 + 0.1 * seed))
    spec = tmp_path / "exp"
    spec.mkdir()
    (spec / "reproduce.yaml").write_text(
        "# why these numbers\nquick:\n  sweep: [seed=0]\n  expected:\n"
        "    # a comment that must survive\n"
        "    - {strategy: target_only, metric: test/cold/ndcg@10, mean: 0.3, tolerance: 0.01}\n"
        "    - {strategy: bridge, metric: test/cold/ndcg@10, mean: 0.3, tolerance: 0.01}\n"
    )
    checked = compare(load_spec(spec, "quick")["expected"], collect(sweep))
    assert checked["fresh"].iloc[0] == pytest.approx(0.25)  # mean of the two seeds
    assert not checked["ok"].iloc[0]
    assert checked["seeds"].tolist() == [2, 0] and not checked["ok"].iloc[1]  # bridge missing
    with pytest.raises(ValueError, match="not in the fresh sweep"):
        record(spec, "quick", checked)
    assert "bridge" in (spec / "reproduce.yaml").read_text()  # a failed record changes nothing

    lines = (spec / "reproduce.yaml").read_text().splitlines(keepends=True)
    (spec / "reproduce.yaml").write_text("".join(lines[:-1]))  # without the bridge entry
    record(spec, "quick", compare(load_spec(spec, "quick")["expected"], collect(sweep)))
    text = (spec / "reproduce.yaml").read_text()
    assert "# a comment that must survive" in text and "mean: 0.2500, tolerance: 0.01" in text


def test_an_experiment_run_as_several_sweeps_is_checked_as_one(tmp_path, capsys):
    for seed in range(2):
        make_run(tmp_path / "a", f"t{seed}", "target_only", seed, [], np.full(40, 0.3))
        make_run(tmp_path / "b", f"b{seed}", "bridge", seed, [], np.full(40, 0.4))
    spec = tmp_path / "exp"
    spec.mkdir()
    (spec / "reproduce.yaml").write_text(
        "full:\n  sweep: [seed=0]\n  expected:\n"
        "    - {strategy: target_only, metric: test/cold/ndcg@10, mean: 0.3, tolerance: 0.01}\n"
        "    - {strategy: bridge, metric: test/cold/ndcg@10, mean: 0.4, tolerance: 0.01}\n"
    )
    out = tmp_path / "report"
    main([str(spec), "--from", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    assert "all numbers within tolerance" in capsys.readouterr().out
    assert "+33.3%" in (out / "results.md").read_text()  # bridge against the other sweep's baseline


def test_a_recorded_setting_matches_runs_by_their_overrides(tmp_path):
    beta = ["data.scenario.cold_fraction=0.2"]
    for seed in range(2):  # beta 0.2 alone: the report labels no setting
        make_run(tmp_path / "a", f"t{seed}", "target_only", seed, beta, np.full(40, 0.3))
    recorded = {"strategy": "target_only", "metric": "test/cold/ndcg@10", "tolerance": 0.01}
    checked = compare([{**recorded, "setting": beta[0], "mean": 0.3}], collect(tmp_path / "a"))
    assert checked["ok"].all() and checked["seeds"].tolist() == [2]

    make_run(
        tmp_path / "a", "t5", "target_only", 0, ["data.scenario.cold_fraction=0.5"], np.ones(40)
    )
    both = compare([{**recorded, "mean": 0.3}], collect(tmp_path / "a"))
    assert not both["ok"].any() and both["seeds"].tolist() == [0]  # which beta? not a mean of both


def test_a_named_section_is_checked_on_its_own(tmp_path, capsys):
    """--section: rows added by a sweep of their own, checked apart from full and quick."""
    for seed in range(2):
        make_run(tmp_path / "sweep", f"d{seed}", "distillation", seed, [], np.full(40, 0.5))
    spec = tmp_path / "exp"
    spec.mkdir()
    (spec / "reproduce.yaml").write_text(
        "full:\n  sweep: [seed=0]\n  expected:\n"
        "    - {strategy: target_only, metric: test/cold/ndcg@10, mean: 0.3, tolerance: 0.01}\n"
        "trained:\n  sweep: [strategy=distillation]\n  expected:\n"
        "    - {strategy: distillation, metric: test/cold/ndcg@10, mean: 0.5, tolerance: 0.01}\n"
    )
    sweep = str(tmp_path / "sweep")
    main([str(spec), "--section", "trained", "--from", sweep, "--out", str(tmp_path / "r")])
    assert "all numbers within tolerance" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the full section's target_only row is missing there
        main([str(spec), "--from", sweep, "--out", str(tmp_path / "r2")])
    with pytest.raises(
        ValueError, match=r"no 'other' section \(its sections: \['full', 'trained'\]\)"
    ):
        load_spec(spec, "other")
    for name in EXPERIMENTS:  # every committed section beyond full and quick is recorded
        folder = ROOT / "experiments" / name
        for section in set(_sections(folder)) - {"full", "quick"}:
            assert all(row["mean"] != 0.0 for row in load_spec(folder, section)["expected"])


def _sections(folder: Path) -> list[str]:
    from omegaconf import OmegaConf

    return list(OmegaConf.load(folder / "reproduce.yaml"))
