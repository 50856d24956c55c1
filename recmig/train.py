"""``train(cfg)``: one run from a composed Hydra config to ``metrics.json``.

dataset -> scenario (domains, cold/warm split) -> tensors -> strategy (item encoder + user
model + transfer rule) -> Lightning Trainer -> best checkpoint -> val/test metrics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from omegaconf import DictConfig, OmegaConf

import recmig.config  # noqa: F401  (registers the config resolvers train configs use)
from recmig.atomic import write_atomic, write_json_atomic
from recmig.data.loaders import CrossDomainDataModule
from recmig.data.scenario_snapshot import SNAPSHOT, save_scenario
from recmig.evaluation.evaluator import ERROR_METRICS, per_user_results
from recmig.evaluation.ranking import GROUPS, METRICS
from recmig.run import (  # noqa: F401  (re-exported: where callers have always found them)
    MOVED_TARGETS,
    build_strategy,
    load_finished_run,
    load_plain_checkpoint,
    privacy_config,
)
from recmig.training.build import (  # noqa: F401  (re-exported, as for recmig.run above)
    RunParts,
    build_run,
    selection_metric,
)
from recmig.training.fit import fit_strategy
from recmig.training.module import TransferModule

log = logging.getLogger(__name__)
FITTED_CHECKPOINT = "best-fitted.ckpt"
"""A closed-form strategy's checkpoint (``best-*`` like a trained run's best epoch)."""
# Lightning 2.x builds torch pytree LeafSpec objects, which torch 2.13 deprecates: a warning
# per fit/test call that says nothing about the run. Only this message is silenced.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


def resume_checkpoint(path: str, trainer: L.Trainer, output_dir: Path) -> str:
    """The checkpoint to resume from (read as plain tensors first).

    Resumed into another folder than its own (what rerunning ``recmig train ...
    resume=<old run>/checkpoints/last.ckpt`` does), Lightning would forget the best epoch's
    score and select among the resumed epochs only. So the checkpoints it tracks are copied into
    this run's folder, and a copy of the checkpoint that points at them is returned instead
    (``output_dir/resume.ckpt``; ``train`` deletes it once the fit has read it)."""
    checkpoint = load_plain_checkpoint(path, "resume")
    moved = False
    for callback in trainer.checkpoint_callbacks:
        state = checkpoint.get("callbacks", {}).get(callback.state_key)
        if not state or state.get("dirpath") in (None, callback.dirpath) or not callback.dirpath:
            continue
        folder = Path(callback.dirpath)
        folder.mkdir(parents=True, exist_ok=True)

        def here(old: str, folder: Path = folder) -> str:
            if not old:
                return old
            new = folder / Path(old).name
            if Path(old).is_file() and not new.exists():
                shutil.copy2(old, new)
            return str(new)

        state["best_k_models"] = {here(p): v for p, v in state.get("best_k_models", {}).items()}
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = here(state.get(key, ""))
        state["dirpath"] = callback.dirpath
        moved = True
    if not moved:
        return str(path)
    copy = output_dir / "resume.ckpt"
    write_atomic(copy, lambda tmp: torch.save(checkpoint, tmp))
    return str(copy)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one configuration end to end; returns the flat metrics written to metrics.json.

    W&B is offline unless ``WANDB_MODE`` says otherwise, as under ``recmig train``, so a run
    started from Python never waits on a network either."""
    os.environ.setdefault("WANDB_MODE", "offline")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # quiet: Lightning prints "Seed set" on stderr, where a run that fails on its input must
    # print only its one error line (the seed is recorded in .hydra/config.yaml)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    log.info("run folder: %s", output_dir.resolve())
    parts = build_run(cfg)
    scenario, datamodule, module, timings = parts
    write_json_atomic(output_dir / "scenario.json", scenario.stats)
    log_model_size(module)

    # `callbacks.<name>=null` removes one (a debug config, a user's override)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        min_epochs=max(cfg.trainer.get("min_epochs") or 0, module.strategy.min_epochs),
    )
    for logger in loggers:
        logger.log_hyperparams(
            {"config": OmegaConf.to_container(cfg, resolve=True), "scenario": scenario.stats}
        )

    start = time.perf_counter()
    fit = fit_strategy(
        module.strategy,
        datamodule.tensors,
        train=lambda: trained_checkpoint(
            trainer, module, datamodule, cfg.get("resume"), output_dir
        ),
    )
    ckpt = fit.result if not fit.closed_form else None
    timings["time/fit_s"] = time.perf_counter() - start
    timings["epochs"] = trainer.current_epoch
    # Float order, and so the last digits of every number, depends on the thread count.
    timings["time/torch_threads"] = torch.get_num_threads()
    metrics = evaluate(trainer, parts, ckpt, output_dir)
    if ckpt is not None or fit.closed_form:  # a run that can be served
        save_scenario(scenario, output_dir / SNAPSHOT)  # opened without rebuilding the split
    if fit.closed_form:  # the model is in memory only: kept for `recmig evaluate` like any run
        # weights_only=False: the same full checkpoint as a trained run's best epoch (saying so
        # keeps Lightning from logging its default); loading it stays weights-only.
        trainer.save_checkpoint(output_dir / "checkpoints" / FITTED_CHECKPOINT, weights_only=False)
    metrics.update(timings)
    metrics.update({f"scenario/{k}": v for k, v in scenario.stats.items()})
    write_json_atomic(output_dir / "metrics.json", metrics)
    for logger in loggers:
        logger.log_metrics({k: v for k, v in metrics.items() if k.startswith(("test/", "time/"))})
    print(format_table(metrics, cfg.strategy.name))
    written = sorted(p.name + ("/" if p.is_dir() else "") for p in output_dir.iterdir())
    print(f"results in {output_dir}: {', '.join(n for n in written if not n.startswith('.'))}")
    return metrics


def trained_checkpoint(
    trainer: L.Trainer,
    module: TransferModule,
    datamodule: CrossDomainDataModule,
    given: str | None,
    output_dir: Path,
) -> str | None:
    """Train for epochs (resuming from ``given``: a checkpoint path or ``last``); the checkpoint
    of the best epoch (None when no checkpoint watches a metric)."""
    resume = resume_checkpoint(given, trainer, output_dir) if given else None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    finally:
        if resume is not None and resume != str(given):
            Path(resume).unlink(missing_ok=True)
    # The checkpoint that watches a metric holds the best model (the other one, `last`).
    selecting = [c for c in trainer.checkpoint_callbacks if c.monitor]
    return (selecting[0].best_model_path or None) if selecting else None


def log_model_size(module: TransferModule) -> None:
    """One line for the model's size: what Lightning's summary table says, without its FLOPs
    column (0 here: recmig's modules take batches, not a fixed example input)."""
    params = list(module.parameters())
    if not params:  # closed form: fitted buffers, no parameters
        return
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params) - trainable
    log.info(
        "model: %s, %s trainable parameters, %s frozen",
        type(module.strategy).__name__,
        get_human_readable_count(trainable).strip(),
        get_human_readable_count(frozen).strip(),
    )


def evaluate(trainer: L.Trainer, parts: RunParts, ckpt: str | None, output_dir: Path) -> dict:
    """Validation and test metrics of a checkpoint (None: the module as it is), the
    beyond-accuracy metrics, and every test user's row in ``test_users.parquet``."""
    if ckpt is not None:
        load_plain_checkpoint(ckpt, "checkpoint")
    val = trainer.validate(parts.module, datamodule=parts.datamodule, ckpt_path=ckpt, verbose=False)
    test = trainer.test(parts.module, datamodule=parts.datamodule, ckpt_path=ckpt, verbose=False)
    metrics = {k: float(v) for k, v in {**val[0], **test[0]}.items()}
    ks = parts.module.ks  # beyond-accuracy at the list length papers report when it is there
    users, beyond = per_user_results(
        parts.module.test_users(), parts.scenario, k=10 if 10 in ks else max(ks)
    )
    write_atomic(output_dir / "test_users.parquet", lambda tmp: users.to_parquet(tmp, index=False))
    metrics.update(beyond)
    strategy = parts.module.strategy
    metrics.update(strategy.transfer_summary())
    if strategy.context.release is not None:
        metrics.update(strategy.context.release.summary())
    return metrics


def reevaluate(run_dir: Path) -> dict[str, float]:
    """Evaluate a finished run's best checkpoint again with the current evaluation code.

    Keeps the run's recorded timings and adds what newer versions measure (per-user rows,
    beyond-accuracy metrics); metrics.json is replaced atomically only after success.
    """
    run_dir = Path(run_dir)
    cfg, best = load_finished_run(run_dir)
    L.seed_everything(cfg.seed, workers=True)
    parts = build_run(cfg)
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False)
    recorded = json.loads((run_dir / "metrics.json").read_text())
    metrics = {**recorded, **evaluate(trainer, parts, str(best), run_dir)}
    write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def format_table(metrics: dict[str, float], title: str) -> str:
    """A short cold/warm table of the test metrics for the end of a run."""
    groups = [g for g in GROUPS if any(k.startswith(f"test/{g}/") for k in metrics)]
    # The ranking metrics at every k and any error metric, where every group has them.
    names = sorted(
        set.intersection(
            *({k.split("/", 2)[2] for k in metrics if k.startswith(f"test/{g}/")} for g in groups)
        )
    )
    wanted = [n for n in names if n.split("@")[0] in (*METRICS, *ERROR_METRICS)]
    width = max([12, *(len(n) + 2 for n in wanted)])  # the longest name and a gap
    header = f"{'metric':<{width}}" + "".join(f"{g:>10}" for g in groups)
    lines = [f"test metrics ({title})", header]
    for name in wanted:
        row = "".join(f"{metrics[f'test/{g}/{name}']:>10.4f}" for g in groups)
        lines.append(f"{name:<{width}}{row}")
    return "\n".join(lines)
