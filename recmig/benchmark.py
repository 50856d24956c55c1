"""``recmig benchmark``: speed and memory of a run's stages, printed as a table.

    recmig benchmark                          the default run (configs/train.yaml)
    recmig benchmark -- experiment=p1_sasrec_ml1m     any Hydra overrides after `--`

Measures, for the composed config: data preparation from scratch (download from PyPI or
GroupLens + conversion to Parquet, in a fresh temporary cache) and from the Parquet cache;
language-model item encoding (text encoder only): seconds, items/s and useful GFLOP/s in fp32
and in the precision ``auto`` picks, each against this machine's matmul peak in that precision,
their smallest cosine, and the cached read; seconds per training epoch (median over
``--epochs`` epochs); evaluation users/s; peak resident memory of the process. A closed-form
strategy (``-- strategy=ease``) is fitted once instead: its fit seconds and the peak memory its
fit allocates replace the epoch figures.

    recmig benchmark --scaling                fit time, memory and held-out NDCG@10 of ItemKNN
                                              and EASE (exact and neighbourhood solvers) on
                                              synthetic catalogues of 5k to 300k items
    recmig benchmark --serving -- strategy=ease   seconds until a finished run answers
                                              (`recmig recommend` end to end, `recmig serve`
                                              until /health), latency of a recommender (one
                                              core): p50/p99 of update + top-10 recommend and
                                              of explain for one user, then an HTTP load test
    recmig benchmark --serving -- data=synthetic_large encoder=id    the same at 15k target items
    recmig benchmark --encoding               the language model over the catalogue and 20k
                                              synthetic titles: items/s, share of the matmul
                                              peak, and where the time goes (profile)
    recmig benchmark --sweep -- experiment=cold_start_ml1m    the estimated wall time of an
                                              experiment's sweep (recmig.sweep_cost)
    recmig benchmark --catalogue-curve        seconds per epoch and test NDCG@10 against the
                                              catalogue's size (ML-1M, synthetic 15k, 200k
                                              generated), full softmax vs sampled (--negatives)

``--serving`` builds the composed run (fitted when closed-form; a neural model keeps its
initial weights, which cost the same to evaluate as trained ones) and serves its scenario's
users: each request folds one random target item into a random user's history and ranks the
catalogue for them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
from hydra.utils import instantiate

from recmig.atomic import write_text_atomic
from recmig.batches import UserBatch
from recmig.data.scenario import SOURCE, TARGET, build_scenario
from recmig.data.synthetic import with_taste
from recmig.data.tensors import TrainingMatrix
from recmig.encoders.item import IdItemEncoder
from recmig.encoders.text import render_item_texts
from recmig.encoders.throughput import encoding_figures, encoding_profile, synthetic_titles
from recmig.evaluation.ranking import metrics_of_top, top_items
from recmig.registry import load_strategy
from recmig.strategy import StrategyContext, TransferStrategy
from recmig.timing import compose_scratch, quiet_trainer, time_epochs
from recmig.tokens import vocab_size
from recmig.training.build import build_run
from recmig.training.fit import fit_strategy
from recmig.users.interest import MeanInterest


def _peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _device(cfg) -> torch.device:
    """The device the run trains on (``trainer.accelerator``): GPU figures where there is one."""
    wants_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def measure(overrides: list[str], epochs: int) -> dict[str, float]:
    cfg = compose_scratch(overrides)
    results: dict[str, float] = {}
    cached = "cache_dir" in cfg.data.dataset  # (generated data, e.g. synthetic, has no cache)
    if cached:
        with tempfile.TemporaryDirectory(prefix="recmig-bench-cache-") as fresh:
            start = time.perf_counter()
            instantiate(cfg.data.dataset, cache_dir=fresh)
            results["data preparation, from scratch (s)"] = time.perf_counter() - start
    start = time.perf_counter()
    data = instantiate(cfg.data.dataset)
    loading = "data loading, Parquet cache (s)" if cached else "data generation (s)"
    results[loading] = time.perf_counter() - start
    start = time.perf_counter()
    scenario = build_scenario(data, instantiate(cfg.data.scenario))
    results["scenario build (s)"] = time.perf_counter() - start

    if "TextItemEncoder" in cfg.encoder._target_:
        texts = render_item_texts(scenario.items, cfg.encoder.template)
        with tempfile.TemporaryDirectory(prefix="recmig-bench-emb-") as fresh:
            results.update(
                encoding_figures(
                    texts,
                    cfg.encoder.model,
                    batch_size=cfg.encoder.batch_size,
                    max_length=cfg.encoder.max_length,
                    device=_device(cfg),
                    cache_dir=fresh,
                )
            )

    L.seed_everything(cfg.seed)
    scenario, datamodule, module, _ = build_run(cfg)
    fit = fit_strategy(
        module.strategy,
        datamodule.tensors,
        train=lambda: {
            **time_epochs(cfg, datamodule, module, epochs),
            **training_stages(module, datamodule),
        },
        fit_once=lambda matrix: timed_fit(module.strategy, matrix),
    )
    if fit.closed_form:
        seconds, peak = fit.result
        results["closed-form fit (s)"] = seconds
        results["closed-form fit, peak allocated (MiB)"] = peak
    else:
        results.update(fit.result)
    results.update(evaluation_stages(module, datamodule))
    n_users = sum(len(b["user"]) for b in datamodule.eval_data["val"])
    evaluator = quiet_trainer(cfg)
    start = time.perf_counter()
    evaluator.validate(module, datamodule=datamodule, verbose=False)
    results["evaluation (users/s)"] = n_users / (time.perf_counter() - start)
    results["evaluation users"] = n_users
    start = time.perf_counter()
    evaluator.test(module, datamodule=datamodule, verbose=False)
    results["evaluation of every test user, full ranking (s)"] = time.perf_counter() - start
    results["test users"] = sum(len(b["user"]) for b in datamodule.eval_data["test"])
    results["target items"] = len(datamodule.tensors.target_catalog)
    results["peak resident memory (MiB)"] = _peak_memory_mib()
    results["torch threads"] = torch.get_num_threads()
    return results


def _stage_lines(stages: dict[str, list[float]], label: str) -> dict[str, float]:
    """Per stage: milliseconds per step (median) and its share of the stages' sum."""
    medians = {name: statistics.median(seconds) for name, seconds in stages.items()}
    total = sum(medians.values())
    lines = {f"{label}: {name} (ms)": 1000 * value for name, value in medians.items()}
    lines.update({f"{label}: {name} (share)": value / total for name, value in medians.items()})
    return lines


def training_stages(module, datamodule, steps: int = 12) -> dict[str, float]:
    """Where a training step's time goes: batch assembly, forward pass with the loss, backward
    pass, optimiser step (median over ``steps`` steps after two warm-up steps, epochs repeated
    when one has fewer batches; the Lightning loop around them adds little), then the
    operators that cost the most (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    strategy = module.strategy.train()
    strategy.prepare(datamodule.tensors.training_matrix())
    strategy.refresh()
    optimizer = module.configure_optimizers()
    stages: dict[str, list[float]] = {
        "batch": [],
        "forward + loss": [],
        "backward": [],
        "optimizer step": [],
    }
    batches = itertools.chain.from_iterable(itertools.repeat(datamodule.train_dataloader()))
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for step in range(steps + 2):
            marks = [time.perf_counter()]
            batch = next(batches)
            marks.append(time.perf_counter())
            loss = strategy.training_loss(batch)["loss"]
            marks.append(time.perf_counter())
            optimizer.zero_grad()
            loss.backward()
            marks.append(time.perf_counter())
            optimizer.step()
            marks.append(time.perf_counter())
            if step >= 2:
                for name, start, end in zip(stages, marks, marks[1:], strict=False):
                    stages[name].append(end - start)
    results = _stage_lines(stages, "training step")
    operators = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    for event in operators[:5]:  # (profiled steps include the two warm-up steps)
        results[f"training step: operator {event.key} (ms)"] = (
            event.self_cpu_time_total / 1000 / (steps + 2)
        )
    return results


@torch.no_grad()
def evaluation_stages(module, datamodule) -> dict[str, float]:
    """Where evaluating the validation users goes, per batch of users: scoring the whole
    target catalogue, the top-K ranking, the metrics."""
    strategy = module.strategy.eval()
    strategy.refresh()
    stages: dict[str, list[float]] = {"scores": [], "top-k": [], "metrics": []}
    for batch in datamodule.eval_data["val"]:
        start = time.perf_counter()
        scores = strategy.target_scores(batch)
        ranked = time.perf_counter()
        top = top_items(scores, batch.excluded, max(module.ks))
        measured = time.perf_counter()
        metrics_of_top(top, batch.relevant, module.ks)
        for name, seconds in zip(
            stages, (ranked - start, measured - ranked, time.perf_counter() - measured), strict=True
        ):
            stages[name].append(seconds)
    return _stage_lines(stages, "evaluation batch")


def timed_fit(strategy, matrix: TrainingMatrix) -> tuple[float, float]:
    """Seconds of a closed-form fit and the peak memory it allocates (MiB; numpy/scipy
    allocations, which is where these fits work, as tracemalloc counts them)."""
    tracemalloc.start()
    start = time.perf_counter()
    strategy.fit(matrix)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def synthetic_matrix(
    items: int, users: int, per_user: int, seed: int = 0, clusters: int = 0
) -> TrainingMatrix:
    """Implicit feedback with Zipf-like item popularity (exponent 1), the first half of the
    items the source domain, the rest the target: the shape of a real catalogue's data.
    ``clusters`` > 0: half of each user's picks come from their taste cluster (item j in
    cluster j mod clusters, both domains), so accuracy on held-out items means something."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1)
    picked = rng.choice(items, size=(users, per_user), p=weights / weights.sum())
    if clusters:
        taste = rng.integers(0, clusters, size=users)
        picked = with_taste(picked, taste, clusters, 0.5, weights, rng)
    rows = np.repeat(np.arange(users), per_user)
    shape = (users, vocab_size(items))
    ones = np.ones(rows.size, np.float32)
    interactions = sp.csr_matrix((ones, (rows, picked.ravel() + 1)), shape=shape)
    interactions.data[:] = 1.0
    domain = np.full(items + 1, TARGET, dtype=np.int8)
    domain[0] = -1
    domain[1 : items // 2 + 1] = SOURCE
    return TrainingMatrix(interactions, interactions.copy(), domain)


def synthetic_context(items: int) -> StrategyContext:
    """What a closed-form strategy is built from for :func:`synthetic_matrix`'s items: the
    first half of the tokens the source catalogue, the rest the target."""
    return StrategyContext(
        vocab_size=vocab_size(items),
        dim=8,
        source_catalog=torch.arange(1, items // 2 + 1),
        target_catalog=torch.arange(items // 2 + 1, items + 1),
        make_item_encoder=partial(IdItemEncoder, items + 2, 8),
        make_user_model=partial(MeanInterest, 8),
    )


def hold_out(matrix: TrainingMatrix, users: int, seed: int = 0) -> tuple[TrainingMatrix, UserBatch]:
    """One random target interaction of up to ``users`` users (with another interaction left)
    removed from the training matrix, and the evaluation batch that ranks it: each user's
    remaining history as sparse ``inputs``, training target items ``excluded``."""
    rng = np.random.default_rng(seed)
    x = matrix.interactions.tocsr()
    target = np.flatnonzero(matrix.item_domain == TARGET)  # tokens, catalogue order
    has_target = x[:, target].getnnz(axis=1) > 0
    chosen = rng.permutation(np.flatnonzero(has_target & (x.getnnz(axis=1) > 1)))[:users]
    held = np.array([rng.choice(np.intersect1d(x[u].indices, target)) for u in chosen])
    x = x.tolil()
    x[chosen, held] = 0
    x = x.tocsr()
    x.eliminate_zeros()
    inputs = x[chosen].tocoo()
    position = np.searchsorted(target, held)
    relevant = torch.zeros(len(chosen), len(target), dtype=torch.bool)
    relevant[torch.arange(len(chosen)), torch.from_numpy(position)] = True
    batch = UserBatch(
        inputs=torch.sparse_coo_tensor(
            np.vstack([inputs.row, inputs.col]), inputs.data, inputs.shape, check_invariants=True
        ).float(),
        excluded=torch.from_numpy(x[chosen][:, target].toarray() > 0),
        relevant=relevant,
        user=torch.full((len(chosen),), -1),  # (users of no scenario)
    )
    training = TrainingMatrix(x, x.copy(), matrix.item_domain)
    return training, batch


def held_out_ndcg(strategy, batch: UserBatch, block: int = 500) -> float:
    """Mean NDCG@10 of the held-out items (see :func:`hold_out`), scored in user blocks."""
    values = []
    inputs = batch.inputs.coalesce()
    for start in range(0, inputs.shape[0], block):
        rows = slice(start, start + block)
        part = torch.index_select(inputs, 0, torch.arange(*rows.indices(inputs.shape[0])))
        scores = strategy.target_scores(UserBatch(user=batch.user[rows], inputs=part))
        top = top_items(scores, batch.excluded[rows], 10)
        values.append(metrics_of_top(top, batch.relevant[rows], (10,))["ndcg@10"])
    return float(torch.cat(values).mean())


def encoding(overrides: list[str], titles: int) -> dict[str, float | str]:
    """Encoding figures (:func:`encoding_figures`) of the composed config's whole catalogue and
    of ``titles`` synthetic product titles, and the profile of the catalogue's encoding."""
    cfg = compose_scratch(["encoder=text", *overrides])
    data = instantiate(cfg.data.dataset)
    texts = render_item_texts(data.items, cfg.encoder.template)
    options = {
        "batch_size": cfg.encoder.batch_size,
        "max_length": cfg.encoder.max_length,
        "device": _device(cfg),
    }
    results: dict[str, float | str] = {}
    for label, batch in (
        (f"catalogue ({len(texts):,} texts)", texts),
        (f"synthetic titles ({titles:,})", synthetic_titles(texts, titles)),
    ):
        with tempfile.TemporaryDirectory(prefix="recmig-bench-emb-") as fresh:
            figures = encoding_figures(batch, cfg.encoder.model, cache_dir=fresh, **options)
        results.update({f"{label}: {key}": value for key, value in figures.items()})
    results.update(encoding_profile(texts, cfg.encoder.model, **options))
    return results


ITEMKNN_MAX = 100_000

SCALING_MODELS = {
    # label -> (strategy, options); the exact EASE runs up to --exact-max items only, ItemKNN
    # up to ITEMKNN_MAX (its dense similarity blocks take time growing with items^2)
    "itemknn": ("itemknn", {}),
    "ease exact": ("ease", {"solver": "exact", "max_items": 10**9}),
    "ease neighbourhood": ("ease", {"solver": "neighbourhood"}),
}


def scaling(
    sizes: tuple[int, ...], users: int, per_user: int, exact_max: int, neighbours: int
) -> dict[str, float]:
    """Fit seconds, peak allocated memory and held-out NDCG@10 of ItemKNN (k 100), exact EASE
    (up to ``exact_max`` items) and EASE's neighbourhood solver per catalogue size, on
    synthetic feedback with taste clusters (one held-out target item for 2,000 users)."""
    results: dict[str, float] = {}
    for items in sizes:
        full = synthetic_matrix(items, users, per_user, clusters=max(1, items // 200))
        matrix, batch = hold_out(full, 2000)
        context = synthetic_context(items)
        for label, (name, options) in SCALING_MODELS.items():
            if options.get("solver") == "exact" and items > exact_max:
                continue
            if name == "itemknn" and items > ITEMKNN_MAX:
                continue
            if options.get("solver") == "neighbourhood":
                options = {**options, "neighbours": neighbours}
                label = f"{label} (k {neighbours})"
            strategy = load_strategy(name)(context, **options)
            seconds, peak = timed_fit(strategy, matrix)
            results[f"{label} fit, {items:,} items (s)"] = seconds
            results[f"{label} fit, {items:,} items, peak allocated (MiB)"] = peak
            results[f"{label}, {items:,} items, held-out NDCG@10"] = held_out_ndcg(strategy, batch)
            del strategy
    return results


CURVE_CATALOGUES = {
    # label -> overrides; the synthetic ones have latent taste clusters, so accuracy on them
    # means something (recmig.data.synthetic), and id items (text of synthetic titles says
    # nothing). A catalogue is the items that have interactions: of the 200k items generated
    # for the last one, 10,000 users x 10 draws by popularity reach about 52k (a full-softmax
    # epoch over them stays within a minute on the reference machine).
    "ML-1M (default scenario)": [],
    "synthetic, 15k target items": [
        "data=synthetic_large",
        "encoder=id",
        "data.dataset.clusters=100",
    ],
    "synthetic, 200k items generated": [
        "data=synthetic_large",
        "encoder=id",
        "data.dataset.clusters=100",
        "data.dataset.users=10000",
        "data.dataset.target_items=200000",
        "data.dataset.per_user=10",
    ],
}


def catalogue_curve(
    catalogues: dict[str, list[str]], overrides: list[str], epochs: int, negatives: int
) -> dict[str, float]:
    """Seconds per training epoch and test NDCG@10 after ``epochs`` epochs against the target
    catalogue's size, with the full softmax and with a sampled softmax of ``negatives``
    logQ-corrected negatives (``sampled_negatives``), each catalogue built from its overrides
    plus ``overrides``. No early stopping or validation: both losses get the same epochs."""
    results: dict[str, float] = {}
    for label, extra in catalogues.items():
        for loss, setting in (("full", "null"), (f"sampled {negatives}", str(negatives))):
            cfg = compose_scratch([*extra, *overrides, f"sampled_negatives={setting}"])
            L.seed_everything(cfg.seed)
            _, datamodule, module, _ = build_run(cfg)
            if not isinstance(module.strategy, TransferStrategy):
                raise ValueError(
                    "--catalogue-curve times training epochs: choose a trained strategy"
                )
            results[f"{label}: target items"] = len(datamodule.tensors.target_catalog)
            results[f"{label}: training windows per epoch"] = len(datamodule.train_data["user"])
            timed = time_epochs(cfg, datamodule, module, epochs)
            tested = quiet_trainer(cfg).test(module, datamodule=datamodule, verbose=False)[0]
            results[f"{label}, {loss}: training epoch, median (s)"] = timed[
                "training epoch, median (s)"
            ]
            for name in ("test/ndcg@10", "test/cold/ndcg@10", "test/warm/ndcg@10"):
                if name in tested:
                    results[f"{label}, {loss}: {name} after {epochs} epochs"] = tested[name]
    return results


def _percentiles(seconds: list[float], label: str) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        f"{label} p50 (ms)": float(np.percentile(ms, 50)),
        f"{label} p99 (ms)": float(np.percentile(ms, 99)),
    }


def serving(overrides: list[str], requests: int, load_requests: int, clients: int) -> dict:
    """Latency of the Recommender API on one core, and a bounded HTTP load test."""
    from recmig.serving import Recommender
    from recmig.serving.http import BackgroundServer, create_app

    cfg = compose_scratch(overrides)
    L.seed_everything(cfg.seed)
    _, datamodule, module, _ = build_run(cfg)
    # A trained strategy is served untrained: its latency does not depend on its weights.
    fit_strategy(module.strategy, datamodule.tensors, train=lambda: None)
    rec = Recommender(module.strategy, datamodule.tensors, name=str(cfg.strategy.name))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    users = rec.scenario.user_ids[rng.integers(0, rec.scenario.num_users, requests + 10)]
    items = rec.item_ids[rec.catalog[rng.integers(0, len(rec.catalog), requests + 10)] - 1]
    update_recommend, recommend_only, explain = [], [], []
    for i, (user, item) in enumerate(zip(users, items, strict=True)):
        start = time.perf_counter()
        rec.recommend_list(user=user, k=10)
        middle = time.perf_counter()
        rec.update(user, item)
        rec.recommend_list(user=user, k=10)
        end = time.perf_counter()
        if i >= 10:  # the first calls warm caches up
            recommend_only.append(middle - start)
            update_recommend.append(end - middle)
    for user in users[: max(20, requests // 10)]:
        start = time.perf_counter()
        rec.explain(user=user, k=10)
        explain.append(time.perf_counter() - start)
    results = {
        "target items": len(rec.catalog),
        "items, both domains": len(rec.item_ids),
        "requests timed": len(update_recommend),
    }
    results.update(_percentiles(recommend_only, "recommend top-10"))
    results.update(_percentiles(update_recommend, "update + recommend top-10"))
    results.update(_percentiles(explain, "explain top-10"))
    results.update(load_test(BackgroundServer(create_app(rec)), users, load_requests, clients))
    results["torch threads (server)"] = torch.get_num_threads()
    torch.set_num_threads(threads)
    return results


def startup(overrides: list[str], run: Path | None, repeats: int = 3) -> dict[str, float]:
    """Seconds until a finished run answers, each in a new process as a user starts it (median
    of ``repeats``): ``recmig recommend <run> --user <u>`` end to end (interpreter, imports,
    opening the run, one list) and ``recmig serve <run>`` until ``/health`` answers. Without
    ``run``, the composed run is first trained for one epoch into a temporary folder (not
    timed: start-up does not depend on the weights)."""
    import socket
    import subprocess
    import urllib.request

    import pandas as pd

    command = [sys.executable, "-m", "recmig.cli"]
    with tempfile.TemporaryDirectory() as scratch:
        if run is None:
            run = Path(scratch) / "run"
            extra = ["logger=none", "trainer.max_epochs=1", f"hydra.run.dir={run}"]
            trained = subprocess.run(
                [*command, "train", *overrides, *extra], capture_output=True, text=True
            )
            if trained.returncode != 0:
                raise RuntimeError(f"training the run to serve failed:\n{trained.stderr[-2000:]}")
        user = str(pd.read_parquet(run / "test_users.parquet", columns=["user_id"]).iloc[0, 0])
        recommend, serve = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(
                [*command, "recommend", str(run), "--user", user], check=True, capture_output=True
            )
            recommend.append(time.perf_counter() - start)
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            start = time.perf_counter()
            journal = Path(scratch) / "updates.sqlite"  # not in the run folder
            server = subprocess.Popen(
                [*command, "serve", str(run), "--port", str(port), "--journal", str(journal)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                while server.poll() is None:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                        break
                    except OSError:
                        time.sleep(0.02)
                serve.append(time.perf_counter() - start)
            finally:
                server.kill()
                server.wait()
            if server.returncode not in (None, -9):
                raise RuntimeError(f"recmig serve {run} ended with {server.returncode}")
    return {
        "recmig recommend <run> --user, end to end, median (s)": statistics.median(recommend),
        "recmig serve <run> until /health answers, median (s)": statistics.median(serve),
    }


def load_test(server, users, total: int, clients: int) -> dict[str, float]:
    """``total`` POST /recommend requests from ``clients`` keep-alive connections; stops by
    itself. Clients and server share this machine's cores."""
    import http.client
    import threading
    from urllib.parse import urlparse

    latencies: list[float] = []
    failures = []

    def client(part: list[str], url) -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        for user in part:
            body = json.dumps({"user": str(user), "k": 10})
            start = time.perf_counter()
            connection.request("POST", "/recommend", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                failures.append(response.status)
        connection.close()

    picks = [str(users[i % len(users)]) for i in range(total)]
    with server as address:
        url = urlparse(address)
        workers = [
            threading.Thread(target=client, args=(picks[i::clients], url)) for i in range(clients)
        ]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"load test: {len(failures)} requests failed (HTTP {failures[0]})")
    return {
        f"HTTP /recommend, {clients} clients (requests/s)": total / wall,
        **_percentiles(latencies, "HTTP /recommend"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recmig benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=2, help="training epochs to time")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead: ItemKNN and EASE (exact and neighbourhood solvers) fitted on synthetic "
        "catalogues of --sizes items: seconds, peak memory, held-out NDCG@10",
    )
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[5_000, 19_000, 50_000, 100_000, 300_000]
    )
    parser.add_argument(
        "--exact-max", type=int, default=20_000, help="--scaling: largest catalogue for exact EASE"
    )
    parser.add_argument(
        "--neighbours", type=int, default=200, help="--scaling: the neighbourhood solver's k"
    )
    parser.add_argument("--users", type=int, default=30_000, help="--scaling: users")
    parser.add_argument("--per-user", type=int, default=20, help="--scaling: items per user")
    parser.add_argument(
        "--serving", action="store_true", help="instead: recommender latency and HTTP load test"
    )
    parser.add_argument(
        "--encoding",
        action="store_true",
        help="instead: language-model encoding of the composed config's catalogue and of "
        "--titles synthetic product titles (items/s, share of the matmul peak, profile)",
    )
    parser.add_argument("--titles", type=int, default=20_000, help="--encoding: synthetic titles")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead: estimate the wall time of the composed config's Hydra sweep from one "
        "short run per strategy (e.g. -- experiment=cold_start_ml1m)",
    )
    parser.add_argument("--requests", type=int, default=500, help="--serving: timed requests")
    parser.add_argument(
        "--run",
        type=Path,
        help="--serving: a finished run to time start-up on (default: train the composed run "
        "for one epoch into a temporary folder)",
    )
    parser.add_argument("--load-requests", type=int, default=1000, help="--serving: HTTP ones")
    parser.add_argument("--clients", type=int, default=2, help="--serving: HTTP connections")
    parser.add_argument(
        "--catalogue-curve",
        action="store_true",
        help="instead: seconds per epoch and test NDCG@10 against catalogue size, full vs "
        "sampled softmax (ML-1M, synthetic 15k items and 200k generated; overrides apply to all)",
    )
    parser.add_argument(
        "--negatives", type=int, default=1024, help="--catalogue-curve: sampled negatives"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    args = parser.parse_args(argv)
    if args.encoding:
        results = encoding(args.overrides, args.titles)
        title = "item encoding, " + (" ".join(args.overrides) or "default run")
    elif args.sweep:
        from recmig.sweep_cost import sweep_cost

        results = sweep_cost(args.overrides)
        title = "sweep cost, " + " ".join(args.overrides)
    elif args.serving:
        results = startup(args.overrides, args.run)
        results.update(serving(args.overrides, args.requests, args.load_requests, args.clients))
        title = "serving, " + (" ".join(args.overrides) or "default run")
    elif args.catalogue_curve:
        results = catalogue_curve(CURVE_CATALOGUES, args.overrides, args.epochs, args.negatives)
        title = "catalogue curve, " + (" ".join(args.overrides) or "default run")
    elif args.scaling:
        results = scaling(
            tuple(args.sizes), args.users, args.per_user, args.exact_max, args.neighbours
        )
        title = f"closed-form scaling, {args.users:,} users x {args.per_user} items (synthetic)"
    else:
        results = measure(args.overrides, args.epochs)
        title = " ".join(args.overrides) or "default run"
    print(f"\nrecmig benchmark: {title}")
    width = max(len(k) for k in results)
    for key, value in results.items():
        if isinstance(value, str):
            shown = value
        else:
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
        print(f"  {key:<{width}}  {shown:>12}")
    if args.json:
        write_text_atomic(args.json, json.dumps({"overrides": args.overrides, **results}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
