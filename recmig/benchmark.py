"""``recmig benchmark``: speed and memory of a run's stages, printed as a table.

    recmig benchmark                          the default run (configs/train.yaml)
    recmig benchmark -- experiment=p1_sasrec_ml1m     any Hydra overrides after `--`

Measures, for the composed config: data preparation from scratch (download from PyPI or
GroupLens + conversion to Parquet, in a fresh temporary cache) and from the Parquet cache;
language-model item encoding throughput without and with the embedding cache (text encoder
only); seconds per training epoch (median over ``--epochs`` epochs); evaluation users/s; peak
resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from recmig.config import compose_config
from recmig.data.scenario import build_scenario
from recmig.encoders.text import encode_texts_with_info, render_item_texts
from recmig.train import build_run


class EpochTimer(L.Callback):
    """Wall time of each training epoch (validation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _compose(overrides: list[str]):
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="recmig-bench-")
    return cfg


def _peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(overrides: list[str], epochs: int) -> dict[str, float]:
    cfg = _compose(overrides)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="recmig-bench-cache-") as fresh:
        start = time.perf_counter()
        instantiate(cfg.data.dataset, cache_dir=fresh)
        results["data preparation, from scratch (s)"] = time.perf_counter() - start
    start = time.perf_counter()
    data = instantiate(cfg.data.dataset)
    results["data loading, Parquet cache (s)"] = time.perf_counter() - start
    start = time.perf_counter()
    scenario = build_scenario(data, instantiate(cfg.data.scenario))
    results["scenario build (s)"] = time.perf_counter() - start

    if "TextItemEncoder" in cfg.encoder._target_:
        texts = render_item_texts(scenario.items, cfg.encoder.template)
        with tempfile.TemporaryDirectory(prefix="recmig-bench-emb-") as fresh:
            for label in ("without cache", "cached"):
                info = encode_texts_with_info(
                    texts,
                    cfg.encoder.model,
                    cache_dir=fresh,
                    batch_size=cfg.encoder.batch_size,
                    max_length=cfg.encoder.max_length,
                    progress=False,
                )
                results[f"item encoding {label} (items/s)"] = len(texts) / info.seconds
                results[f"item encoding {label} (s)"] = info.seconds

    L.seed_everything(cfg.seed)
    scenario, datamodule, module, _ = build_run(cfg)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        accelerator=cfg.trainer.accelerator,
        devices=1,
    )
    trainer.fit(module, datamodule=datamodule)
    results["training epoch, median (s)"] = statistics.median(timer.seconds)
    results["training windows per epoch"] = len(datamodule.train_data["user"])
    n_users = sum(len(b["user"]) for b in datamodule.eval_data["val"])
    evaluator = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=cfg.trainer.accelerator,
        devices=1,
    )
    start = time.perf_counter()
    evaluator.validate(module, datamodule=datamodule, verbose=False)
    results["evaluation (users/s)"] = n_users / (time.perf_counter() - start)
    results["evaluation users"] = n_users
    results["peak resident memory (MiB)"] = _peak_memory_mib()
    results["torch threads"] = torch.get_num_threads()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recmig benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=2, help="training epochs to time")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    args = parser.parse_args(argv)
    results = measure(args.overrides, args.epochs)
    title = " ".join(args.overrides) or "default run"
    print(f"\nrecmig benchmark: {title}")
    width = max(len(k) for k in results)
    for key, value in results.items():
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
        print(f"  {key:<{width}}  {shown:>12}")
    if args.json:
        args.json.write_text(json.dumps({"overrides": args.overrides, **results}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
