"""The `recmig` command on real data: ML-100K from the PyPI wheel, the real MiniLM encoder,
W&B in offline mode, a real Hydra multirun. Each run is cut to one or two epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import custom_table_overrides

FAST = ["data=ml100k_genres", "trainer.max_epochs=1"]


def recmig(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "recmig.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_train_end_to_end_on_real_movielens_with_wandb(tmp_path):
    out = tmp_path / "run"
    result = recmig(
        "train",
        *FAST,
        "trainer.max_epochs=2",
        "strategy=feature_averaging",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test"):
        for group in ("cold", "warm"):
            for name in ("recall", "ndcg", "hit", "mrr", "precision", "f1"):
                for k in (5, 10, 20):
                    value = metrics[f"{split}/{group}/{name}@{k}"]
                    assert 0.0 <= value <= 1.0
            at = {
                (name, k): metrics[f"{split}/{group}/{name}@{k}"]
                for name in ("recall", "ndcg", "hit", "mrr", "precision", "f1")
                for k in (5, 10, 20)
            }
            for name in ("recall", "hit", "mrr"):  # a longer list finds at least as much
                assert at[(name, 5)] <= at[(name, 10)] <= at[(name, 20)]
            for k in (5, 10, 20):  # a user counted in recall, MRR or NDCG has a hit
                assert max(at[("recall", k)], at[("mrr", k)], at[("ndcg", k)]) <= at[("hit", k)]
                assert max(at[("precision", k)], at[("f1", k)]) <= at[("hit", k)]
                if group == "warm":  # one held-out item each: recall is the hit rate
                    assert at[("recall", k)] == pytest.approx(at[("hit", k)])
                    # ... precision the hit rate over K, F1 2 hits / (K + 1)
                    assert at[("precision", k)] == pytest.approx(at[("hit", k)] / k, rel=1e-4)
                    assert at[("f1", k)] == pytest.approx(2 * at[("hit", k)] / (k + 1), rel=1e-4)
    # Learned something: far above a random ranking of ~1000 target items (NDCG@10 ~ 0.005).
    assert metrics["test/warm/hit@20"] > 0.05 and metrics["test/cold/ndcg@10"] > 0.05
    scenario = json.loads((out / "scenario.json").read_text())
    assert scenario["cold/test_users"] > 0 and scenario["overlap/users"] > 0
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs, "W&B should have written an offline run file"
    assert "test metrics (feature_averaging)" in result.stdout
    assert (out / "checkpoints" / "last.ckpt").exists()

    # Per-user rows agree with the aggregated metrics and carry ML-100K's demographics.
    import pandas as pd

    users = pd.read_parquet(out / "test_users.parquet")
    cold = users[users["group"] == "cold"]
    assert cold["ndcg@10"].mean() == pytest.approx(metrics["test/cold/ndcg@10"], abs=1e-5)
    assert len(cold) == scenario["cold/test_users"] and set(users["gender"]) == {"F", "M"}
    assert all(len(top) == 20 for top in users["top"])  # top-K item ids, K = max(ks)
    assert 0 < metrics["test/cold/coverage@10"] <= 1 and metrics["test/warm/novelty@10"] > 0

    # `recmig evaluate` re-tests the best checkpoint: same numbers, per-user rows rebuilt.
    (out / "test_users.parquet").unlink()
    again = recmig("evaluate", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    reevaluated = json.loads((out / "metrics.json").read_text())
    for key, value in metrics.items():
        assert reevaluated[key] == pytest.approx(value, abs=1e-6), key
    assert (out / "test_users.parquet").exists()
    missing = recmig("evaluate", str(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and "not a recmig run folder" in missing.stderr


@pytest.mark.slow
def test_multirun_runs_each_strategy(tmp_path):
    sweep = tmp_path / "sweep"
    strategies = ["target_only", "pooled", "feature_averaging", "mapping"]
    result = recmig(
        "train",
        "-m",
        *FAST,
        "logger=csv",
        "encoder=id",
        f"strategy={','.join(strategies)}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for path in sweep.glob("*/metrics.json"):
        found[path.parent.name.split("_", 1)[1].rsplit("_seed", 1)[0]] = json.loads(
            path.read_text()
        )
    assert sorted(found) == sorted(strategies)
    for metrics in found.values():
        assert "test/cold/ndcg@10" in metrics and "test/warm/ndcg@10" in metrics

    report = recmig("report", str(sweep), "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    main_table = report.stdout.split("\n\n")[0]  # then beyond-accuracy and slice tables
    rows = [line for line in main_table.splitlines() if line.startswith("| (default)")]
    assert sorted(row.split(" | ")[1] for row in rows) == sorted(strategies)
    mapping_row = next(row for row in rows if " mapping " in row)
    expected = found["mapping"]["test/cold/ndcg@10"] / found["target_only"]["test/cold/ndcg@10"]
    assert f"({100 * (expected - 1):+.1f}%, p" in mapping_row
    for name in ("results.csv", "results.png", "slices.csv"):  # ML-100K has gender and age
        assert (tmp_path / "report" / name).exists()
    assert len(list(sweep.glob("*/test_users.parquet"))) == len(strategies)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["strategy=no_such_strategy"], "no_such_strategy"),
        (["strategy.name=no_such_strategy"], "strategy.name='no_such_strategy'"),
        (["trainer.max_epoch=3"], "max_epoch"),
        (["+data.scenario.min_ratng=3"], "min_ratng"),
        (["data.scenario.target_domains=[Cartoons]"], "Cartoons"),
        (["data.dataset.version=ml-10m"], "version"),
        (["strategy=mapping", "+strategy.alpha=0.3"], "alpha"),
    ],
)
def test_bad_options_end_in_one_line_error(tmp_path, overrides, expected):
    result = recmig(
        "train", *FAST, "logger=none", *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("recmig: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def _custom_files(tmp_path: Path, items_header: str = "item_id,title") -> list[str]:
    (tmp_path / "inter.csv").write_text("user_id,item_id,domain\nu1,i1,Books\nu1,i2,Films\n")
    (tmp_path / "items.csv").write_text(f"{items_header}\ni1,A book\ni2,A film\n")
    return [
        "data=custom_files",
        f"data.dataset.interactions={tmp_path / 'inter.csv'}",
        f"data.dataset.items={tmp_path / 'items.csv'}",
        "data.scenario.source_domains=[Books]",
        "data.scenario.target_domains=[Films]",
        "encoder.template='{title}'",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"data.dataset.interactions": "missing.csv"}, "missing.csv"),
        ({"items_header": "id,title"}, "item_id"),
    ],
)
def test_bad_files_end_in_one_line_error(tmp_path, change, expected):
    overrides = _custom_files(tmp_path, change.pop("items_header", "item_id,title"))
    overrides += [f"{k}={tmp_path / v}" for k, v in change.items()]
    result = recmig(
        "train",
        "logger=none",
        "trainer.max_epochs=1",
        *overrides,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("recmig: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]


def _train_custom(tmp_path: Path, data, out: Path, *overrides: str):
    result = recmig(
        "train",
        *custom_table_overrides(tmp_path, data),
        "encoder=id",
        "logger=csv",
        "trainer.max_epochs=2",
        f"hydra.run.dir={out}",
        *overrides,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_custom_files_train_end_to_end_and_reproducibly(tmp_path, data):
    first = _train_custom(tmp_path, data, tmp_path / "a", "strategy=mapping", "seed=3")
    assert first["scenario/overlap/users"] == 60 and "test/cold/ndcg@10" in first
    again = _train_custom(tmp_path, data, tmp_path / "b", "strategy=mapping", "seed=3")
    scores = {k: v for k, v in first.items() if k.startswith(("val/", "test/"))}
    assert scores == {k: again[k] for k in scores}  # same config + seed: same numbers


@pytest.mark.slow
def test_resume_in_a_new_folder_ends_as_the_uninterrupted_run(tmp_path, data):
    """The last checkpoint of epoch 2 resumed to 4 epochs in a new run folder (what rerunning the
    command with resume= does): the metrics of the run never stopped, whose best epoch, here the
    second, came before the resume, and the new folder holds that best checkpoint."""
    run = ("trainer.max_epochs=4", "loader.batch_size=1")
    whole = _train_custom(tmp_path, data, tmp_path / "whole", *run)
    _train_custom(tmp_path, data, tmp_path / "a", *run, "trainer.max_epochs=2")
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    resumed = _train_custom(tmp_path, data, tmp_path / "b", *run, f"resume={last}")
    assert resumed["epochs"] == whole["epochs"] == 4
    scores = [k for k in whole if k.startswith(("val/", "test/"))]
    assert scores and {k: resumed[k] for k in scores} == pytest.approx(
        {k: whole[k] for k in scores}, abs=1e-6
    )
    best = [p.name for p in (tmp_path / "b" / "checkpoints").glob("best-*.ckpt")]
    assert best == [p.name for p in (tmp_path / "whole" / "checkpoints").glob("best-*.ckpt")]
    assert not (tmp_path / "b" / "resume.ckpt").exists()


def test_strategies_command_lists_every_registered_strategy(tmp_path):
    """Every entry point of the `recmig.strategies` group, each with its description and the
    class it loads from (read from the package metadata, not a list kept in this test)."""
    from importlib.metadata import entry_points

    from recmig.registry import load_strategy

    result = recmig("strategies", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    builtins = [e for e in entry_points(group="recmig.strategies") if e.value.startswith("recmig_")]
    assert len(builtins) >= 14
    lines = result.stdout.splitlines()
    for entry in builtins:
        (row,) = [i for i, line in enumerate(lines) if line.split()[:1] == [entry.name]]
        assert load_strategy(entry.name).description in lines[row]
        assert lines[row + 1].strip() == f"from recmig: {entry.value}"
        cls = load_strategy(entry.name)
        kind = "closed form:" if not cls.streams else f"trained on the {cls.streams[0]}"
        assert lines[row + 2].strip().startswith(kind), lines[row + 2]
    # An option that adds a stream is named beside the streams the class always reads.
    (pooled,) = [i for i, line in enumerate(lines) if line.split()[:1] == ["pooled"]]
    assert "(+ overlap with set_weight > 0)" in lines[pooled + 2]
    assert "failed to load" not in result.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_recommend_explain_stream_and_serve_a_real_run(tmp_path):
    import urllib.request

    import pandas as pd

    out = tmp_path / "run"
    trained = recmig("train", *FAST, "strategy=target_only", f"hydra.run.dir={out}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    users = pd.read_parquet(out / "test_users.parquet")
    warm = users[users["group"] == "warm"].iloc[0]
    listed = recmig("recommend", str(out), "--user", warm.user_id, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    printed = [line.split()[1] for line in listed.stdout.splitlines()[1:]]
    assert printed == list(warm.top)[:10]  # the evaluator's list, with titles beside the ids
    history = tmp_path / "history.csv"
    pd.DataFrame({"item_id": list(warm.top)[:3], "rating": [5, 4, None]}).to_csv(history)
    new = recmig("recommend", str(out), "--history", str(history), "--explain", cwd=tmp_path)
    assert new.returncode == 0, new.stderr[-3000:]
    assert "cause_item_id" in new.stdout.splitlines()[0]
    (tmp_path / "bad.txt").write_text(f"{warm.top[0]}\nno-such-item\n")
    bad = recmig("recommend", str(out), "--history", str(tmp_path / "bad.txt"), cwd=tmp_path)
    assert bad.returncode == 2 and "history[1]: item id 'no-such-item'" in bad.stderr

    stream = recmig("stream", str(out), "--max-users", "20", "--max-events", "5", cwd=tmp_path)
    assert stream.returncode == 0, stream.stderr[-3000:]
    summary = json.loads((out / "streaming.json").read_text())
    assert 0 <= summary["cold/ndcg_updated"] <= 1 and summary["warm/events"] > 0
    faithful = recmig("faithfulness", str(out), "--max-users", "20", cwd=tmp_path)
    assert faithful.returncode == 0, faithful.stderr[-3000:]
    deletion = json.loads((out / "faithfulness.json").read_text())
    # The deletion test on a real run: the items an explanation names matter more than random
    # ones (SASRec is not additive, so this is not true by construction).
    assert deletion["warm/drop_explained"] > deletion["warm/drop_random"]
    assert deletion["warm/explained_wins"] > 0.5
    report = recmig(
        "report", str(out), "--examples", "2", "--out", str(tmp_path / "rep"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr[-3000:]
    results = (tmp_path / "rep" / "results.md").read_text()
    assert "Worked examples (target_only, seed 0)" in results and "- user " in results

    port = _free_port()
    server = _start_server(out, port, tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        body = json.dumps({"user": warm.user_id, "k": 10}).encode()
        request = urllib.request.Request(
            url + "/recommend", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            items = json.loads(response.read())["items"]
        assert [i["item_id"] for i in items] == list(warm.top)[:10]
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_unset_required_values_are_one_line_errors_before_any_data_is_read(tmp_path):
    # data=custom_files leaves its files and domains ??? : all named at once, exit 2, and no
    # run folder is made (nothing was read or written).
    overrides = _custom_files(tmp_path)
    partial = [o for o in overrides if not o.startswith("data.scenario.source_domains")]
    result = recmig(
        "train", *partial, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("recmig: error:")]
    assert errors == [
        "recmig: error: missing value for data.scenario.source_domains: the config leaves it "
        "??? (required); set it on the command line, e.g. data.scenario.source_domains=..."
    ]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
    both = recmig("train", "data=custom_files", "logger=none", cwd=tmp_path)
    assert "data.dataset.interactions, data.dataset.items, data.scenario" in both.stderr


@pytest.mark.parametrize("command", ["recommend", "serve"])
def test_a_run_path_that_is_not_there_is_named_at_once(tmp_path, command):
    extra = ["--user", "1"] if command == "recommend" else []
    missing = recmig(command, str(tmp_path / "no_such_run"), *extra, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"recmig: error: {tmp_path / 'no_such_run'}: no such run folder (the path does not exist)"
    )
    empty = recmig(command, str(tmp_path), *extra, cwd=tmp_path)
    assert empty.returncode == 2
    assert "not a recmig run folder (no .hydra/config.yaml)" in empty.stderr


def _start_server(run: Path, port: int, cwd: Path, *extra: str) -> subprocess.Popen:
    import time
    import urllib.request

    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "recmig.cli", "serve", str(run), "--port", str(port), *extra]
    server = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a cold start reads the dataset cache
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"recmig serve ended: {server.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise AssertionError("recmig serve did not answer /health within 300 s")


def test_acknowledged_updates_survive_sigkill_of_the_server(tmp_path, data):
    """Updates over HTTP, SIGKILL, restart: every acknowledged update and the same lists."""
    from tests.test_serving import call

    run = tmp_path / "run"
    _train_custom(tmp_path, data, run, "strategy=ease")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(run, port, tmp_path, "--max-users", "2")
    try:
        updates = [("u1", "i0"), ("u2", "i1"), ("u3", "i2"), ("newcomer", "i3"), ("u1", "i4")]
        for user, item in updates:
            status, answer = call(url, "/update", {"user": user, "item_id": item})
            assert status == 200 and answer["recent"][0] == item, answer
        users = sorted({u for u, _ in updates})
        lists = {u: call(url, "/recommend", {"user": u, "k": 5})[1] for u in users}
        status, health = call(url, "/health")
        assert health["users_in_memory"] <= 2 and health["journal"]["updates"] == len(updates)
    finally:
        server.kill()  # SIGKILL: no shutdown code runs
        server.wait(timeout=30)
    server = _start_server(run, port, tmp_path)
    try:
        assert call(url, "/health")[1]["journal"]["updates"] == len(updates)
        for user in users:
            assert call(url, "/recommend", {"user": user, "k": 5})[1] == lists[user], user
    finally:
        server.kill()
        server.wait(timeout=30)
    # `recmig recommend` on the served run reads the same journal.
    shown = recmig("recommend", str(run), "--user", "newcomer", "-k", "5", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert [i["item_id"] for i in lists["newcomer"]["items"]][0] in shown.stdout


def test_every_command_in_the_table_runs_a_function_and_is_in_the_usage(capsys):
    """One table (recmig.cli.COMMANDS) lists, documents and dispatches the commands."""
    import importlib

    from recmig import cli

    for name, command in cli.COMMANDS.items():
        module, function = command.target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--help"])
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    assert all(f"recmig {name}" in shown for name in cli.COMMANDS)
