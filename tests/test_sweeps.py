"""Sweeps beyond the basic launcher: joblib in parallel, an Optuna search, W&B grouping of a
sweep's runs and the report logged as a W&B artifact, and the job array the SLURM launcher
submits."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from submitit.core.utils import FailedJobError
from test_cli import recmig
from wandb.proto import wandb_internal_pb2

from recmig.config import CONFIG_DIR, enable_plugin_configs


def wandb_records(path: Path):
    """Records of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, block, buffer = 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        data = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buffer = data if kind in (1, 2) else buffer + data  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL/LAST end it
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buffer)
            yield record


def records_of(run_dir: Path, kind: str) -> list:
    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no offline W&B run under {run_dir}"
    return [r for f in files for r in wandb_records(f) if r.WhichOneof("record_type") == kind]


@pytest.mark.slow
def test_optuna_search_in_parallel_grouped_in_wandb_and_reported(tmp_path):
    sweep = tmp_path / "bridge-search"
    result = recmig(
        "train",
        "-m",
        "hparams_search=optuna_bridge",
        "hydra.sweeper.n_trials=2",
        "hydra/launcher=local_parallel",
        "data=ml100k_genres",
        "encoder=id",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(best.best_params) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "strategy.meta_hidden",
    }
    trials = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(trials) == 2
    lrs = {OmegaConf.load(t / ".hydra" / "config.yaml").optimizer.lr for t in trials}
    assert len(lrs) == 2  # the sampler chose the values, not the defaults
    for trial in trials:
        (run,) = records_of(trial, "run")
        assert run.run.run_group == "bridge-search"

    report = recmig("report", str(sweep), "--wandb", "--metrics", "test/cold/ndcg@10", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (sweep / "results.png").exists()
    (report_run,) = records_of(sweep, "run")
    assert report_run.run.run_group == "bridge-search"
    artifacts = [a for a in records_of(sweep, "artifact") if a.artifact.type == "report"]
    assert len(artifacts) == 1  # (the results table is a second, `run_table` artifact)
    logged = {f.path.rsplit("/", 1)[-1] for f in artifacts[0].artifact.manifest.contents}
    assert {"results.md", "results.csv", "results.png"} <= logged


def _stand_in(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_slurm_launcher_submits_the_job_array_a_cluster_user_expects(tmp_path, monkeypatch):
    # No cluster here: stand-ins for SLURM's commands (srun is only looked for; sbatch keeps
    # the script it is given and refuses it), so the real launcher and submitit build and
    # submit the sbatch script from our config, and the test reads what SLURM would get.
    bin_dir, record = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    _stand_in(bin_dir, "srun", "exit 0")
    _stand_in(bin_dir, "sbatch", f'cp "$1" {record}; echo "sbatch: no cluster" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    enable_plugin_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=proj42",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
            ],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    launcher.setup(hydra_context=None, task_function=lambda _: None, config=cfg)
    with pytest.raises(FailedJobError, match="sbatch: no cluster"):
        launcher.launch([["seed=0"], ["seed=1"], ["seed=2"]], initial_job_idx=0)
    directives = {
        line.removeprefix("#SBATCH ")
        for line in record.read_text().splitlines()
        if line.startswith("#SBATCH ")
    }
    assert {
        "--array=0-2%3",  # one array of the sweep's three jobs, at most 64 at once
        "--partition=gpu",
        "--account=proj42",
        "--gpus-per-node=1",
        "--ntasks-per-node=1",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--time=120",
    } <= directives
    assert f"--output={tmp_path / 'sweep'}/.submitit/%A_%a/%A_%a_0_log.out" in directives


def test_parallel_jobs_split_the_cores_between_them():
    from hydra_plugins.recmig_launcher import threads_per_job

    assert threads_per_job(n_jobs=2, jobs=6, cores=16) == 8
    assert threads_per_job(n_jobs=8, jobs=2, cores=16) == 8  # fewer jobs than slots: no idle core
    assert threads_per_job(n_jobs=-1, jobs=4, cores=16) == 4  # -1: as many at once as cores
    assert threads_per_job(n_jobs=-1, jobs=40, cores=16) == 1
    assert threads_per_job(n_jobs=3, jobs=3, cores=2) == 1  # never zero
    assert threads_per_job(n_jobs=2, jobs=6, cores=16, chosen=3) == 3
    with pytest.raises(ValueError, match="threads_per_job"):
        threads_per_job(n_jobs=2, jobs=6, cores=16, chosen=0)


@pytest.mark.parametrize(
    ("options", "exported", "expected"),
    [
        ([], None, "auto"),  # one job, four slots: it gets every core (joblib alone: 1/4)
        (["hydra.launcher.threads_per_job=1"], "2", 1),  # the launcher option wins
        ([], "1", 1),  # else what the user exported
    ],
    ids=["split", "option", "exported"],
)
def test_parallel_sweep_jobs_run_with_their_share_of_threads(
    tmp_path, data, options, exported, expected
):
    """A real joblib multirun: the job's PyTorch reports the thread count it ran with (PyTorch
    caps it at the cores, so the cases differ even on a two-core machine)."""
    import json
    import subprocess
    import sys

    from conftest import custom_table_overrides

    from hydra_plugins.recmig_launcher import available_cores

    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["WANDB_MODE"] = "offline"
    if exported is not None:
        env["OMP_NUM_THREADS"] = exported
    command = [sys.executable, "-m", "recmig.cli", "train", "-m"]
    result = subprocess.run(
        [
            *command,
            "hydra/launcher=local_parallel",
            "hydra.launcher.n_jobs=4",
            "strategy=popularity",
            "seed=0",
            "logger=none",
            *custom_table_overrides(tmp_path, data),
            *options,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(runs) == 1
    want = available_cores() if expected == "auto" else expected
    assert runs[0]["time/torch_threads"] == want
