"""Sweeps beyond the basic launcher: joblib in parallel, an Optuna search, W&B grouping of a
sweep's runs and the report logged as a W&B artifact, and the SLURM launcher's config."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
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


def test_slurm_launcher_config_composes():
    # No cluster here: check the config a cluster user gets (submitit's own launcher class).
    enable_plugin_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.array_parallelism) == (
        "gpu",
        1,
        64,
    )
