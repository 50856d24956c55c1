"""What a Hydra multirun will cost, from one short run per strategy (``recmig benchmark --sweep``).

    recmig benchmark --sweep -- experiment=cold_start_ml1m

The sweep is the experiment's ``hydra.sweeper.params`` (comma-separated values, every
combination, as Hydra's basic sweeper runs them). Each strategy of the sweep is built once on
the sweep's first setting of every other parameter and timed: building the run (data from the
Parquet cache, text embeddings from their cache: what every job of a sweep after the first one
pays), one training epoch (or the closed-form fit), one validation pass and one test pass.
A job is then estimated as

    start + build + max_epochs x (epoch + validation / check_val_every_n_epoch) + test

(closed form: start + build + fit + validation + test; start: a fresh Python process importing
recmig, timed once), an upper bound where early stopping ends a run before
``trainer.max_epochs``. Checkpoints and logs are not in it: a real ``target_only`` job of
``cold_start_ml1m`` (13 epochs) took 79 s where its parts add up to 68 s. The estimate is for
this machine and the accelerator the composed config asks for; serial wall time is the sum over
jobs, a launcher with W workers divides it by up to W.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import lightning as L

from recmig.config import compose_config
from recmig.timing import compose_scratch, quiet_trainer, time_epochs
from recmig.training.build import build_run
from recmig.training.fit import fit_strategy


def sweep_jobs(params: dict[str, str]) -> list[dict[str, str]]:
    """Every combination of a basic sweeper's ``params`` (override -> "a,b,c")."""
    values = {}
    for key, spec in params.items():
        text = str(spec)
        if "(" in text:
            raise ValueError(
                f"hydra.sweeper.params.{key}: {text!r} is a sweep function; --sweep expands "
                "comma-separated values only"
            )
        values[key] = [v.strip() for v in text.split(",")]
    keys = list(values)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values.values())]


def time_job(overrides: list[str]) -> dict[str, float]:
    """Seconds of one job's parts (see the module docstring) for ``overrides``."""
    cfg = compose_scratch(overrides)
    L.seed_everything(cfg.seed)
    start = time.perf_counter()
    _, datamodule, module, _ = build_run(cfg)
    parts = {"build": time.perf_counter() - start}
    start = time.perf_counter()
    fit = fit_strategy(
        module.strategy,
        datamodule.tensors,
        train=lambda: time_epochs(cfg, datamodule, module, 1)["training epoch, median (s)"],
    )
    if fit.closed_form:
        parts["fit"] = time.perf_counter() - start
        parts["epochs"] = 0
    else:
        parts["epoch"] = fit.result
        parts["epochs"] = int(cfg.trainer.max_epochs)
        parts["validations per epoch"] = 1 / int(cfg.trainer.check_val_every_n_epoch)
    evaluator = quiet_trainer(cfg)
    for stage in ("validate", "test"):
        start = time.perf_counter()
        getattr(evaluator, stage)(module, datamodule=datamodule, verbose=False)
        parts[stage] = time.perf_counter() - start
    return parts


def process_start() -> float:
    """Seconds a fresh Python process takes to import recmig's training code (each job of a
    sweep pays it)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import recmig.train"], check=True)
    return time.perf_counter() - start


def job_seconds(parts: dict[str, float], start: float = 0.0) -> float:
    """One job's estimated seconds from its timed parts and the process ``start``."""
    if "fit" in parts:
        return start + parts["build"] + parts["fit"] + parts["validate"] + parts["test"]
    per_epoch = parts["epoch"] + parts["validate"] * parts["validations per epoch"]
    return start + parts["build"] + parts["epochs"] * per_epoch + parts["test"]


def sweep_cost(overrides: list[str]) -> dict[str, float | str]:
    """Per strategy of the sweep: its timed parts, jobs and estimated hours; then the total."""
    cfg = compose_config(overrides, with_hydra=True)
    params = dict(cfg.hydra.sweeper.params or {})
    if not params:
        raise ValueError(
            "--sweep: the composed config has no hydra.sweeper.params (pick an experiment "
            "with a sweep, e.g. -- experiment=cold_start_ml1m)"
        )
    jobs = sweep_jobs(params)
    first = {key: value for key, value in jobs[0].items() if key != "strategy"}
    by_strategy: dict[str, int] = {}
    for job in jobs:
        name = job.get("strategy", str(cfg.strategy.name))
        by_strategy[name] = by_strategy.get(name, 0) + 1
    start = process_start()
    results: dict[str, float | str] = {"jobs": len(jobs), "process start (s)": start}
    total = 0.0
    for name, count in by_strategy.items():
        setting = [f"{key}={value}" for key, value in first.items()]
        parts = time_job([*overrides, *setting, f"strategy={name}", "logger=none"])
        seconds = job_seconds(parts, start)
        total += count * seconds
        for part, value in parts.items():
            unit = "" if part in ("epochs", "validations per epoch") else " (s)"
            results[f"{name}: {part}{unit}"] = value
        results[f"{name}: estimated seconds per job"] = seconds
        results[f"{name}: jobs"] = count
    results["estimated serial wall time (h)"] = total / 3600
    return results
