"""A real SLURM sweep: `.ci/slurm_up.sh` starts a one-node Slurm cluster on this machine (munged,
slurmctld, slurmd), and `recmig train -m hydra/launcher=slurm` submits a two-job array to it
through submitit, exactly as on a real cluster. Skipped, saying why, where Slurm is not
installed or cannot start (.ci/run installs it with apt where it can)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import custom_table_overrides

SLURM_UP = Path(__file__).resolve().parents[1] / ".ci" / "slurm_up.sh"
PARTITION = "ci"


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory):
    """SLURM_CONF of a one-node cluster, its daemons stopped after the module's tests."""
    for binary in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(binary) is None:
            pytest.skip(
                f"{binary} not installed: .ci/run installs slurm-wlm and munge via apt; "
                "install them to run this test"
            )
    folder = tmp_path_factory.mktemp("slurm")
    try:
        up = subprocess.run(
            ["bash", str(SLURM_UP), str(folder), PARTITION],
            capture_output=True,
            text=True,
            timeout=120,  # the script's own waits are shorter
        )
        if up.returncode != 0:
            lines = up.stderr.strip().splitlines() or [f"exit status {up.returncode}"]
            pytest.skip(f"Slurm did not start: {lines[-1]}")
        yield folder / "slurm.conf"
    finally:
        subprocess.run(["bash", str(SLURM_UP), "--stop", str(folder)], timeout=60)


def test_a_sweep_runs_as_a_job_array_on_a_real_slurm_cluster(slurm_conf, tmp_path, data):
    sweep = tmp_path / "sweep"
    strategies = ["popularity", "itemknn"]
    # The jobs inherit this environment (sbatch exports it), so they find the cluster, run
    # with this venv's Python (submitit's sys.executable) and keep W&B offline.
    env = {
        **os.environ,
        "SLURM_CONF": str(slurm_conf),
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        *(sys.executable, "-m", "recmig.cli", "train", "-m"),
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={PARTITION}",
        # What this one small node has: no GPU, one core and a little memory per job.
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=5",
        f"strategy={','.join(strategies)}",
        *custom_table_overrides(tmp_path, data),
        f"hydra.sweep.dir={sweep}",
    ]
    try:
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        queue = subprocess.run(["squeue"], env=env, capture_output=True, text=True, timeout=30)
        pytest.fail(f"the sweep did not finish in 300 s; squeue:\n{queue.stdout}{queue.stderr}")
    assert result.returncode == 0, result.stderr[-3000:]

    # Slurm ran both jobs of one array: its --output logs, one folder per array task.
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    assert f"#SBATCH --partition={PARTITION}" in script.read_text()
    assert "#SBATCH --array=0-1%" in script.read_text()
    assert len(list(sweep.glob(".submitit/*_*/*_log.out"))) == 2
    runs = {path.parent.name: json.loads(path.read_text()) for path in sweep.glob("*/metrics.json")}
    assert sorted(name.split("_")[1] for name in runs) == sorted(strategies)
    for name, metrics in runs.items():
        assert "test/cold/ndcg@10" in metrics
        assert list((sweep / name).glob("wandb/offline-run-*")), f"{name}: no offline W&B run"

    report = subprocess.run(
        [sys.executable, "-m", "recmig.cli", "report", str(sweep), "--out", str(tmp_path / "rep")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    main_table = report.stdout.split("\n\n")[0]
    rows = [line for line in main_table.splitlines() if line.startswith("| (default)")]
    assert sorted(row.split(" | ")[1] for row in rows) == sorted(strategies)
    assert (tmp_path / "rep" / "results.csv").exists()
