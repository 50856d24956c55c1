"""`recmig report` on hand-made run folders whose numbers are known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recmig import report
from recmig.report import collect, slices, summarize, to_markdown, write_report
from recmig.report import runs as report_runs

USERS = [f"u{i}" for i in range(40)]


def make_run(
    root: Path,
    name: str,
    strategy: str,
    seed: int,
    overrides: list[str],
    per_user: np.ndarray,
    column: str = "ndcg@10",
    split: int = 0,
) -> None:
    """A run folder as `recmig train` leaves it: config, overrides, metrics, per-user rows."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\nstrategy:\n  name: {strategy}\ndata:\n  scenario:\n    seed: {split}\n"
    )
    listed = [f"strategy={strategy}", f"seed={seed}", *overrides]
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in listed))
    users = pd.DataFrame(
        {
            "user_id": USERS,
            "group": "cold",
            column: per_user,
            "gender": ["F", "M"] * 20,
            "age": ["1", "25", "25", "1"] * 10,  # either age in either gender
        }
    )
    users.to_parquet(run / "test_users.parquet")
    metrics = {f"test/cold/{column}": float(per_user.mean()), "time/fit_s": 10.0 + seed}
    (run / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.5, size=len(USERS))
    for seed in range(3):
        noise = rng.normal(0, 0.01, size=len(USERS))
        make_run(tmp_path, f"t{seed}", "target_only", seed, [], base + noise)
        make_run(tmp_path, f"b{seed}", "bridge", seed, [], base + 0.05 + noise)
        make_run(tmp_path, f"l{seed}", "lora", seed, ["encoder=text"], base + noise[::-1])
    return tmp_path


def test_variants_are_labelled_and_compared_with_the_baseline(sweep):
    runs = collect(sweep)
    assert sorted(runs["strategy"].unique()) == ["bridge", "lora [encoder=text]", "target_only"]
    assert set(runs["setting"]) == {""}
    table = summarize(runs, ("test/cold/ndcg@10", "time/fit_s"))
    row = table.loc[("", "bridge")]
    base = runs.loc[runs["strategy"] == "target_only", "test/cold/ndcg@10"].mean()
    ours = runs.loc[runs["strategy"] == "bridge", "test/cold/ndcg@10"].mean()
    assert row["test/cold/ndcg@10 gain %"] == pytest.approx(100 * (ours / base - 1))
    assert row["seeds"] == 3 and row["time/fit_s mean"] == pytest.approx(11.0)


def test_significance_is_a_paired_test_over_users(sweep):
    runs = collect(sweep)
    table = summarize(runs, ("test/cold/ndcg@10",))
    mean_of = {}
    for strategy in ("bridge", "target_only"):
        frames = [
            pd.read_parquet(Path(r) / "test_users.parquet")
            for r in runs.loc[runs["strategy"] == strategy, "run"]
        ]
        mean_of[strategy] = pd.concat(frames).groupby("user_id")["ndcg@10"].mean()
    expected = stats.wilcoxon(mean_of["bridge"], mean_of["target_only"]).pvalue
    assert table.loc[("", "bridge"), "test/cold/ndcg@10 p"] == pytest.approx(expected)
    assert table.loc[("", "bridge"), "test/cold/ndcg@10 p"] < 0.001  # +0.05 for every user
    assert table.loc[("", "lora [encoder=text]"), "test/cold/ndcg@10 p"] > 0.05  # same users


def test_falls_back_to_seeds_without_per_user_rows(sweep):
    for path in sweep.rglob("test_users.parquet"):
        path.unlink()
    table = summarize(collect(sweep), ("test/cold/ndcg@10",))
    assert table.loc[("", "bridge"), "test/cold/ndcg@10 test"] == "seeds"
    assert " over seeds)" in to_markdown(table, ("test/cold/ndcg@10",))


def test_slices_by_gender_and_binned_age(sweep):
    sliced = slices(collect(sweep))
    ages = sliced.xs(("target_only", "cold", "age"), level=("strategy", "group", "attribute"))
    assert set(ages.index.get_level_values("value")) == {"<18", "25-34"}  # codes 1, 25
    women = sliced.loc[("", "bridge", "cold", "gender", "F")]
    assert women["users"] == 20


def metrics_of(sweep: Path, prefix: str, metric: str = "test/cold/ndcg@10") -> np.ndarray:
    """The metric of the run folders named ``<prefix><seed>``, read from their metrics.json."""
    paths = sorted(sweep.glob(f"{prefix}[0-9]/metrics.json"))
    return np.array([json.loads(p.read_text())[metric] for p in paths])


def users_of(sweep: Path, prefix: str) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted(sweep.glob(f"{prefix}[0-9]/*.parquet")))


def row_of(markdown: str, *first_cells: str) -> list[str]:
    """The cells of the one table row that starts with ``first_cells``."""
    start = "| " + " | ".join(first_cells) + " |"
    rows = [line for line in markdown.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, rows)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_report_files_hold_the_numbers_of_the_runs(sweep, tmp_path_factory):
    rng = np.random.default_rng(3)
    for seed in range(3):  # the classical baselines: popularity below target_only, ease above
        make_run(sweep, f"p{seed}", "popularity", seed, [], rng.uniform(0.05, 0.2, len(USERS)))
        make_run(sweep, f"e{seed}", "ease", seed, [], rng.uniform(0.3, 0.6, len(USERS)))
    out = tmp_path_factory.mktemp("report")
    markdown = write_report(collect(sweep), out, ("test/cold/ndcg@10", "time/fit_s"))
    assert (out / "results.md").read_text() == markdown + "\n"
    base, ours, ease = (metrics_of(sweep, p) for p in ("t", "b", "e"))
    users = {p: users_of(sweep, p).groupby("user_id")["ndcg@10"].mean() for p in "tbe"}
    wilcoxon = stats.wilcoxon(users["b"], users["t"]).pvalue
    assert wilcoxon < 0.001  # bridge is +0.05 for every user: printed as p<0.001
    # Main table: mean ± std over the seeds' metrics.json, the gain over target_only and its
    # paired test; the seconds of time/fit_s (10 + seed) without either.
    main = markdown.split("\n\n")[0]
    cells = row_of(main, "(default)", "bridge")
    gain = 100 * (ours.mean() / base.mean() - 1)
    assert cells[2:] == [
        "3",
        f"{ours.mean():.4f} ± {ours.std(ddof=1):.4f} ({gain:+.1f}%, p<0.001)",
        "11 ± 1",
    ]
    lora = metrics_of(sweep, "l")
    lora_p = stats.wilcoxon(users_of(sweep, "l").groupby("user_id")["ndcg@10"].mean(), users["t"])
    lora_gain = 100 * (lora.mean() / base.mean() - 1)
    assert row_of(main, "(default)", "lora [encoder=text]")[3] == (
        f"{lora.mean():.4f} ± {lora.std(ddof=1):.4f} ({lora_gain:+.1f}%, p={lora_p.pvalue:.2g})"
    )
    assert row_of(main, "(default)", "target_only")[3] == (
        f"{base.mean():.4f} ± {base.std(ddof=1):.4f}"  # the baseline has no gain of its own
    )
    # Every classical baseline has its row; the strongest (ease, best mean) is the reference of
    # the second table, with each other strategy's gain over it and the paired test.
    for strategy in ("popularity", "ease"):
        assert row_of(main, "(default)", strategy)[2] == "3"
    against = markdown.split("Against the strongest classical baseline")[1].split("\n\n")[1]
    strongest = stats.wilcoxon(users["b"], users["e"]).pvalue
    printed = "p<0.001" if strongest < 0.001 else f"p={strongest:.2g}"
    assert row_of(against, "(default)", "ease", "bridge")[3] == (
        f"{100 * (ours.mean() / ease.mean() - 1):+.1f}%, {printed}"
    )
    assert sorted(line.split(" | ")[2] for line in against.splitlines()[2:]) == [
        "bridge",
        "lora [encoder=text]",
        "popularity",
        "target_only",
    ]
    # results.csv: the same numbers with every column, the p-values unrounded.
    table = pd.read_csv(out / "results.csv").set_index("strategy")
    assert table.loc["bridge", "test/cold/ndcg@10 mean"] == pytest.approx(ours.mean())
    assert table.loc["bridge", "test/cold/ndcg@10 std"] == pytest.approx(ours.std(ddof=1))
    assert table.loc["bridge", "test/cold/ndcg@10 p"] == pytest.approx(wilcoxon)
    assert table.loc["bridge", "test/cold/ndcg@10 test"] == "users"
    assert table.loc["bridge", "test/cold/ndcg@10 vs strongest p"] == pytest.approx(strongest)
    assert table.loc["target_only", "strongest"] == "ease"
    # Slices: each gender's and age group's mean per-user NDCG@10 over the seeds' rows, in
    # results.md and slices.csv.
    rows = users_of(sweep, "b")
    by_gender = rows.groupby("gender")["ndcg@10"].mean()
    by_age = rows.groupby("age")["ndcg@10"].mean()
    gender_table = markdown.split("cold test users, ndcg@10 by gender:")[1].split("\n\n")[1]
    age_table = markdown.split("cold test users, ndcg@10 by age:")[1].split("\n\n")[1]
    assert gender_table.splitlines()[0] == "| setting | strategy | F (n=20) | M (n=20) |"
    assert age_table.splitlines()[0] == "| setting | strategy | <18 (n=20) | 25-34 (n=20) |"
    assert row_of(gender_table, "(default)", "bridge")[2:] == [
        f"{by_gender['F']:.4f}",
        f"{by_gender['M']:.4f}",
    ]
    assert row_of(age_table, "(default)", "bridge")[2:] == [
        f"{by_age['1']:.4f}",
        f"{by_age['25']:.4f}",
    ]
    sliced = pd.read_csv(out / "slices.csv")
    sliced = sliced.set_index(["strategy", "attribute", "value"])
    assert sliced.loc[("bridge", "gender", "F"), "mean"] == pytest.approx(by_gender["F"])
    assert sliced.loc[("bridge", "age", "25-34"), "mean"] == pytest.approx(by_age["25"])
    assert sliced.loc[("bridge", "age", "25-34"), "users"] == 20
    for name in ("results.png", "slices.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_jobs_without_metrics_are_named_and_the_others_reported(sweep, capsys):
    failed = sweep / "b1"  # as Hydra leaves a job that raised: its config, no metrics
    (failed / "metrics.json").unlink()
    (failed / "test_users.parquet").unlink()
    out = sweep / "report"
    report.main([str(sweep), "--out", str(out), "--metrics", "test/cold/ndcg@10"])
    printed = capsys.readouterr().out
    markdown = (out / "results.md").read_text()
    named = f"- {failed}: strategy=bridge seed=1"
    assert named in printed and named in markdown
    assert markdown.startswith("Not in these tables: 1 job(s) without metrics.json")
    main = markdown.split("\n\n")[2]  # after the list of unfinished jobs
    assert row_of(main, "(default)", "bridge")[2] == "2"  # seeds 0 and 2
    assert row_of(main, "(default)", "target_only")[2] == "3"
    for path in sweep.rglob("metrics.json"):
        path.unlink()
    with pytest.raises(ValueError, match=r"no finished run; jobs without metrics.json: .*b0"):
        collect(sweep)


def test_settings_are_data_overrides_each_with_its_own_baseline(tmp_path):
    rng = np.random.default_rng(1)
    for beta in (0.2, 0.5):
        for seed in range(2):
            values = rng.uniform(0, 1, size=len(USERS))
            override = [f"data.scenario.cold_fraction={beta}"]
            make_run(tmp_path, f"t{beta}{seed}", "target_only", seed, override, values)
            make_run(tmp_path, f"m{beta}{seed}", "mapping", seed, override, values * 2)
    table = summarize(collect(tmp_path), ("test/cold/ndcg@10",))
    for beta in (0.2, 0.5):
        gain = table.loc[
            (f"data.scenario.cold_fraction={beta}", "mapping"), "test/cold/ndcg@10 gain %"
        ]
        assert gain == pytest.approx(100.0)


def test_a_rating_sweep_leads_with_its_errors_and_plots_rmse(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    base = rng.uniform(0.8, 1.2, size=len(USERS))
    for seed in range(3):
        noise = rng.normal(0, 0.01, size=len(USERS))
        make_run(tmp_path, f"t{seed}", "target_only", seed, [], base + noise, column="rmse")
        make_run(tmp_path, f"b{seed}", "bridge", seed, [], base - 0.05 + noise, column="rmse")
    plotted = []
    monkeypatch.setattr(report, "plot", lambda table, path, metrics: plotted.append(metrics))
    markdown = write_report(collect(tmp_path), tmp_path / "report")
    header = markdown.splitlines()[0]
    assert header.startswith("| setting | strategy | seeds | test/cold/rmse | time/fit_s |")
    bridge = next(line for line in markdown.splitlines() if "| bridge |" in line)
    assert "(-" in bridge and "p<0.001" in bridge  # lower error: a negative gain, over users
    assert plotted == [("test/cold/rmse",)]
    assert "cold test users, rmse by gender" in markdown


@pytest.mark.parametrize("table", ["current", "without overrides and config columns"])
def test_new_runs_join_an_earlier_reports_runs_csv(tmp_path, table):
    old, new = tmp_path / "old", tmp_path / "new"
    for seed in range(2):
        for beta in (0.2, 0.5):
            override = [f"data.scenario.cold_fraction={beta}", "experiment=x"]
            make_run(old, f"t{beta}{seed}", "target_only", seed, override, np.full(40, 0.3))
            make_run(old, f"l{beta}{seed}", "lora", seed, [*override, "encoder=text"], np.ones(40))
    write_report(collect(old), tmp_path / "report", ("test/cold/ndcg@10",))
    earlier = tmp_path / "report" / "runs.csv"
    if table != "current":  # as reports wrote it before those columns existed
        pd.read_csv(earlier).drop(columns=["overrides", "config"]).to_csv(earlier, index=False)
    # The earlier run folders are gone; new cells: bridge at beta 0.5 and a rerun of one
    # target_only run, which replaces its runs.csv row. `experiment=x` is set everywhere,
    # recorded in the earlier table or not: no variant.
    override = ["data.scenario.cold_fraction=0.5", "experiment=x"]
    for seed in range(2):
        make_run(new, f"b{seed}", "bridge", seed, override, np.full(40, 0.45))
    make_run(new, "t", "target_only", 0, override, np.full(40, 0.3))
    runs = collect([earlier, new])
    counts = runs.groupby(["setting", "strategy"]).size().to_dict()
    assert counts == {
        ("data.scenario.cold_fraction=0.2", "lora [encoder=text]"): 2,
        ("data.scenario.cold_fraction=0.2", "target_only"): 2,
        ("data.scenario.cold_fraction=0.5", "bridge"): 2,
        ("data.scenario.cold_fraction=0.5", "lora [encoder=text]"): 2,
        ("data.scenario.cold_fraction=0.5", "target_only"): 2,
    }
    rerun = runs[(runs["strategy"] == "target_only") & (runs["seed"] == 0)]
    assert str(new) in rerun["run"].iloc[-1]  # the folder, not the csv row
    summary = summarize(runs, ("test/cold/ndcg@10",))
    gain = summary.loc[("data.scenario.cold_fraction=0.5", "bridge"), "test/cold/ndcg@10 gain %"]
    assert gain == pytest.approx(50.0)


def test_missing_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="typo: no such sweep folder or runs.csv"):
        collect([tmp_path / "typo"])


def test_a_csv_that_is_not_a_runs_table_is_named(tmp_path):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"other.csv: not a runs.csv .*'setting'"):
        collect([tmp_path / "other.csv"])


@pytest.mark.parametrize("baseline_rerun", ["identical", "different"])
def test_cells_whose_run_folders_are_gone_keep_their_per_user_test_and_slices(
    tmp_path, baseline_rerun
):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.5, size=len(USERS))
    old, new, folder = tmp_path / "old", tmp_path / "new", tmp_path / "report"
    for seed in range(2):
        make_run(old, f"t{seed}", "target_only", seed, [], base + 0.01 * seed)
        make_run(old, f"b{seed}", "bridge", seed, [], base + 0.05 + rng.normal(0, 0.02, 40))
    write_report(collect(old), folder, ("test/cold/ndcg@10",))
    earlier = pd.read_csv(folder / "results.csv").set_index("strategy")
    earlier_slices = pd.read_csv(folder / "slices.csv")
    # The run folders are gone; the baseline is rerun (per-user rows again), bridge is not.
    shutil.rmtree(old)
    report_runs.user_rows.cache_clear()
    for seed in range(2):
        shift = 0.01 * seed if baseline_rerun == "identical" else 0.02 * seed
        make_run(new, f"t{seed}", "target_only", seed, [], base + shift)
    runs = collect([folder / "runs.csv", new])
    table = summarize(runs, ("test/cold/ndcg@10",))
    test = table.loc[("", "bridge"), ["test/cold/ndcg@10 p", "test/cold/ndcg@10 test"]]
    if baseline_rerun == "identical":  # the same comparison: the earlier Wilcoxon test holds
        assert test.tolist() == [earlier.loc["bridge", "test/cold/ndcg@10 p"], "users"]
    else:  # the baseline moved since: only seeds can be paired now
        assert test["test/cold/ndcg@10 test"] == "seeds"
    # Slices: the rerun baseline's from its rows, bridge's as the earlier report had them.
    sliced = slices(runs)["mean"]
    then = earlier_slices.set_index(["strategy", "attribute", "value"])["mean"]
    assert sliced[("", "bridge", "cold", "gender", "F")] == pytest.approx(
        then["bridge", "gender", "F"]
    )
    assert len(sliced.loc[("", "target_only")]) == 4  # F, M, <18, 25-34: no duplicates
    write_report(runs, folder, ("test/cold/ndcg@10",))  # the same folder, rewritten
    assert "earlier_report" not in pd.read_csv(folder / "runs.csv").columns


def test_gains_are_also_shown_against_the_strongest_classical_baseline(sweep):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.5, size=len(USERS))
    for seed in range(3):  # closed-form baselines repeat themselves over seeds
        make_run(sweep, f"p{seed}", "popularity", seed, [], base - 0.02)
        make_run(sweep, f"e{seed}", "ease", seed, [], base + 0.10)
    runs = collect(sweep)
    table = summarize(runs, ("test/cold/ndcg@10",))
    assert set(table["strongest"]) == {"ease"}  # the best mean among the classical ones
    bridge = runs.loc[runs["strategy"] == "bridge", "test/cold/ndcg@10"].mean()
    ease = runs.loc[runs["strategy"] == "ease", "test/cold/ndcg@10"].mean()
    row = table.loc[("", "bridge")]
    assert row["test/cold/ndcg@10 vs strongest %"] == pytest.approx(100 * (bridge / ease - 1))
    assert row["test/cold/ndcg@10 vs strongest test"] == "users"
    assert pd.isna(table.loc[("", "ease"), "test/cold/ndcg@10 vs strongest %"])
    markdown = write_report(runs, sweep / "report", ("test/cold/ndcg@10",))
    assert "Against the strongest classical baseline" in markdown
    assert "| (default) | ease | bridge |" in markdown
    # Without classical baselines there is no such table.
    assert "strongest" not in write_report(runs, sweep / "none", ("test/cold/ndcg@10",), ())


def test_an_error_metric_picks_the_lowest_baseline():
    runs = pd.DataFrame(
        {
            "setting": ["", "", ""],
            "strategy": ["user_bias", "popularity", "ease [strategy.lam=5]"],
            "test/cold/rmse": [0.93, 0.99, 0.95],
        }
    )
    assert report.strongest_baselines(runs, "test/cold/rmse") == {"": "user_bias"}
    assert report.strongest_baselines(runs.iloc[1:], "test/cold/rmse") == {
        "": "ease [strategy.lam=5]"
    }


def test_split_seeds_are_replicates_of_a_cell_not_settings(tmp_path):
    rng = np.random.default_rng(2)
    for split in range(3):
        values = rng.uniform(0, 1, size=len(USERS))
        listed = [f"data.scenario.seed={split}"]
        make_run(tmp_path, f"t{split}", "target_only", 0, listed, values, split=split)
        make_run(tmp_path, f"m{split}", "mapping", 0, listed, values + 0.1, split=split)
    runs = collect(tmp_path)
    assert set(runs["setting"]) == {""}  # one cell per strategy, three replicates each
    assert sorted(runs.loc[runs["strategy"] == "mapping", "seed"]) == [0, 1000, 2000]
    table = summarize(runs, ("test/cold/ndcg@10",))
    assert table.loc[("", "mapping"), "seeds"] == 3
    assert table.loc[("", "mapping"), "test/cold/ndcg@10 p"] < 0.05  # paired over users
