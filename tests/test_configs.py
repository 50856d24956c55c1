"""Every shipped config composes, instantiates where that is cheap, feeds only keys its consumer
accepts, and comments every key; one batch of every encoder x user model trains; the debug group
runs through the real CLI."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from recmig.config import CONFIG_DIR, compose_config
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import ScenarioConfig, build_scenario
from recmig.objectives import RankingObjective, RatingObjective, objective_names
from recmig.privacy import PrivacyConfig
from recmig.registry import discover, load_strategy
from recmig.train import build_run, build_strategy, privacy_config, selection_metric, train
from tests.conftest import custom_table_overrides, synthetic_data

CONFIGS = Path(CONFIG_DIR)
YAMLS = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
GROUPS = {p.parent.as_posix() for p in map(Path, YAMLS) if p.parent != Path(".")}
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Targets whose **kwargs go on to another callable: their keys are checked against that one.
KWARGS_FORWARD = {
    "recmig.loggers.WandbLogger": "lightning.pytorch.loggers.WandbLogger",
    "lightning.pytorch.loggers.WandbLogger": "wandb.init",
    "recmig.encoders.item.TextIdItemEncoder": "recmig.encoders.item.TextItemEncoder",
}
# Top-level keys of train.yaml that are not config groups, and the code that reads each.
ROOT_CONSUMERS = {
    "seed": train,
    "objective": build_strategy,
    "selection": selection_metric,
    "rating_baseline": RatingObjective.for_run,
    "sampled_negatives": RankingObjective.for_run,
    "rating_shrinkage": RatingObjective.for_run,
    "tuned": None,  # read by strategy configs (${oc.select:tuned.<strategy>.<key>,...})
    "privacy": build_strategy,
    "dim": build_strategy,
    "ks": build_run,
    "resume": train,
    "hydra": None,  # Hydra's own (structured) config
}
# Nodes whose children are options of their own consumer, not values of the node's.
OPEN = ("hydra", "tuned", "selection")


def overrides_of(rel: str) -> list[str]:
    """The command-line choice that selects a config file (none for train.yaml)."""
    path = Path(rel)
    return [] if path.parent == Path(".") else [f"{path.parent.as_posix()}={path.stem}"]


@functools.cache
def composed(*overrides: str) -> DictConfig:
    """The run config of these overrides, with the hydra node (read-only: cached)."""
    cfg = compose_config(list(overrides), with_hydra=True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def package_of(rel: str) -> tuple[str, ...]:
    """Where a file's keys land in the composed config (its `# @package` or its group)."""
    head = (CONFIGS / rel).read_text().splitlines()[:1]
    if head and head[0].replace(" ", "") == "#@package_global_":
        return ()
    parent = Path(rel).parent
    return () if parent == Path(".") else tuple(parent.parts)


# ----------------------------------------------------------------------------- composition


def run_config(cfg: DictConfig, tmp_path: Path) -> DictConfig:
    """A mutable copy without the hydra node, its run folder under tmp_path."""
    run = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    run.pop("hydra", None)
    run.paths.output_dir = str(tmp_path / "run")
    run.paths.cache_dir = str(tmp_path / "cache")
    return run


def check_binds(node: DictConfig, *positional) -> None:
    """The callable of a `_target_` node accepts the node's keys (and ``positional`` first)."""
    options = OmegaConf.to_container(node, resolve=True)
    signature = inspect.signature(get_object(options["_target_"]))
    options = {k: v for k, v in options.items() if k not in HYDRA_KEYS}
    (signature.bind_partial if node.get("_partial_") else signature.bind)(*positional, **options)


def instantiate_cheap(cfg: DictConfig, tmp_path: Path) -> None:
    """Build every piece of a run config that costs no data, download or language model; bind
    the rest (dataset loader, item encoder, strategy) to its callable's signature."""
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    check_binds(cfg.data.dataset)
    assert isinstance(instantiate(cfg.data.scenario), ScenarioConfig)
    loader = instantiate(cfg.loader)
    assert isinstance(loader, LoaderConfig)
    check_binds(cfg.encoder, 10, cfg.dim, None)
    user_model = instantiate(cfg.user_model)(cfg.dim)
    assert isinstance(user_model, torch.nn.Module)
    optimizer = instantiate(cfg.optimizer)(params=list(user_model.parameters()))
    assert isinstance(optimizer, torch.optim.Optimizer)
    options = OmegaConf.to_container(cfg.strategy, resolve=True)
    inspect.signature(load_strategy(options.pop("name"))).bind(None, **options)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    assert all(isinstance(c, L.Callback) for c in callbacks)
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    assert all(isinstance(x, L.pytorch.loggers.Logger) for x in loggers)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    assert isinstance(trainer, L.Trainer)
    assert selection_metric(cfg).startswith("val/")
    privacy_config(cfg.get("privacy"))


def missing(cfg: DictConfig) -> set[str]:
    """Keys outside the hydra node whose value is ??? (unresolved: no Hydra runtime here)."""

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}{k}.")
        elif node == "???":
            yield path[:-1]

    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("hydra", None)
    return set(walk(tree, ""))


# Values a file leaves to the user (???), set as its header's example sets them.
REQUIRED = {
    "data/custom_files.yaml": {
        "data.dataset.interactions": "ratings.csv",
        "data.dataset.items": "items.csv",
        "data.scenario.source_domains": "[Books]",
        "data.scenario.target_domains": "[Movies_and_TV]",
    }
}


@pytest.mark.parametrize("rel", YAMLS)
def test_every_config_composes_and_instantiates(rel, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    required = REQUIRED.get(rel, {})
    assert missing(composed(*overrides_of(rel))) == set(required)
    cfg = composed(*overrides_of(rel), *(f"{k}={v}" for k, v in required.items()))
    instantiate_cheap(run_config(cfg, tmp_path), tmp_path)
    if rel.startswith("hydra/launcher/"):
        from hydra.plugins.launcher import Launcher

        assert issubclass(get_object(cfg.hydra.launcher._target_), Launcher)
    if rel.startswith("hparams_search/"):
        sampler = instantiate(cfg.hydra.sweeper.sampler)
        assert type(sampler).__name__ == cfg.hydra.sweeper.sampler._target_.rsplit(".", 1)[1]
        assert cfg.hydra.sweeper.direction in ("maximize", "minimize")


def sweep_overrides(cfg: DictConfig):
    params = cfg.hydra.sweeper.get("params") or {}
    return OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])


def sweeps_params(rel: str) -> bool:
    hydra = yaml.safe_load((CONFIGS / rel).read_text()).get("hydra") or {}
    return "params" in (hydra.get("sweeper") or {})


# The experiments run as sweeps (p1_sasrec_ml1m is a single run) and the searches.
SWEEPS = [r for r in YAMLS if r.startswith(("experiment/", "hparams_search/")) and sweeps_params(r)]


@pytest.mark.parametrize("rel", SWEEPS)
def test_sweep_params_name_options_and_keys_of_every_job(rel):
    """A group in `hydra.sweeper.params` lists existing options; every other swept key exists
    in the config of every combination of those options (a missing one fails the sweep's jobs)."""
    base = overrides_of(rel)
    overrides = sweep_overrides(composed(*base))
    assert overrides, f"{rel}: no hydra.sweeper.params"
    groups, keys = {}, []
    for o in overrides:
        name = o.get_key_element()
        if name in GROUPS:
            groups[name] = (
                [str(v) for v in o.sweep_iterator()] if o.is_sweep_override() else [str(o.value())]
            )
            for option in groups[name]:
                assert (CONFIGS / name / f"{option}.yaml").is_file(), (
                    f"{rel}: hydra.sweeper.params.{name} lists {option!r}, "
                    f"not a file in configs/{name}/"
                )
        else:
            keys.append(name)
    for choice in itertools.product(*([(g, v) for v in vs] for g, vs in groups.items())):
        cfg = composed(*base, *(f"{g}={v}" for g, v in choice))
        for key in keys:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            assert isinstance(node, DictConfig) and leaf in node, (
                f"{rel}: hydra.sweeper.params.{key} is not a key of the config with {choice}"
            )


EXPERIMENTS = [r for r in YAMLS if r.startswith("experiment/")]


@pytest.mark.parametrize("rel", EXPERIMENTS)
def test_tuned_values_reach_their_strategy(rel):
    """`tuned.<strategy>.<key>` is read by that strategy's config, or it would be ignored."""
    tuned = composed(*overrides_of(rel)).get("tuned") or {}
    for name, values in tuned.items():
        strategy = composed(*overrides_of(rel), f"strategy={name}").strategy
        for key, value in values.items():
            assert key in strategy and strategy[key] == value, (
                f"{rel}: tuned.{name}.{key}={value} does not reach strategy={name} "
                f"(configs/strategy/{name}.yaml must read ${{oc.select:tuned.{name}.{key},...}})"
            )


def test_debug_group_comes_last_and_wins_over_experiments():
    for experiment in EXPERIMENTS:
        plain = composed(*overrides_of(experiment))
        for first, second in itertools.permutations([overrides_of(experiment)[0], "debug=overfit"]):
            cfg = composed(first, second)
            assert cfg.trainer.overfit_batches == 1 and cfg.trainer.max_epochs == 30
            assert cfg.callbacks.early_stopping.patience == 30
            # Everything the debug config does not set stays the experiment's.
            assert cfg.strategy == plain.strategy and cfg.data == plain.data
        cfg = composed(*overrides_of(experiment), "debug=one_batch", "logger=csv")
        assert cfg.logger is None and cfg.callbacks is None and cfg.trainer.fast_dev_run == 1
    defaults = yaml.safe_load((CONFIGS / "train.yaml").read_text())["defaults"]
    assert defaults[-1] == {"optional debug": None}


# ----------------------------------------------------------------------------- keys


def target_keys(target: str) -> set[str] | None:
    """Keyword parameters of a `_target_` (None: it takes **kwargs nobody forwards for us)."""
    params = inspect.signature(get_object(target)).parameters.values()
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        if target not in KWARGS_FORWARD:
            return None
        names |= target_keys(KWARGS_FORWARD[target]) or set()
    return names | HYDRA_KEYS


def paths_consumed() -> set[str]:
    """`paths.<key>` names other configs interpolate or the package reads."""
    texts = [p.read_text() for p in CONFIGS.rglob("*.yaml") if p.parent.name != "paths"]
    texts += [p.read_text() for p in (CONFIGS.parent / "recmig").rglob("*.py")]
    return set(re.findall(r"paths\.(\w+)", "\n".join(texts)))


def accepted(cfg: DictConfig, parent: tuple[str, ...]) -> tuple[set[str] | None, str]:
    """The keys the consumer of the node at ``parent`` accepts (None: any), and its name."""
    node = OmegaConf.select(cfg, ".".join(parent)) if parent else cfg
    if not parent:
        return set(ROOT_CONSUMERS) | {g.split("/")[0] for g in GROUPS}, "train.yaml's top level"
    target = node.get("_target_")
    if target is not None and target_keys(target) is not None:
        return target_keys(target), target
    kind = OmegaConf.get_type(node)  # Hydra's own nodes have a schema (launchers: **kwargs)
    if dataclasses.is_dataclass(kind):
        return {f.name for f in dataclasses.fields(kind)}, f"{kind.__module__}.{kind.__name__}"
    if target is not None:
        return set(), f"{target} (takes **kwargs: say where they go in KWARGS_FORWARD)"
    if parent == ("data",):
        return {"dataset", "scenario"}, "recmig.train.build_run"
    if parent == ("strategy",):
        cls = load_strategy(node.name)
        keys = set(inspect.signature(cls).parameters) - {"context"}
        return keys | {"name"}, f"{cls.__module__}.{cls.__name__}"
    if parent in (("callbacks",), ("logger",)):
        return None, "recmig.train.train (instantiates every entry)"
    if parent == ("selection",):
        return set(objective_names()), "recmig.objectives (registered objectives)"
    if len(parent) == 2 and parent[0] == "selection":
        return {"monitor", "mode"}, "recmig.train.selection_metric"
    if parent == ("privacy",):
        return {f.name for f in dataclasses.fields(PrivacyConfig)}, "recmig.privacy.PrivacyConfig"
    if parent == ("tuned",):
        return set(discover()), "recmig strategies (registered names)"
    if len(parent) == 2 and parent[0] == "tuned":
        return set(inspect.signature(load_strategy(parent[1])).parameters), parent[1]
    if parent == ("paths",):
        return paths_consumed(), "configs and code that read paths.<key>"
    raise AssertionError(f"no consumer known for {'.'.join(parent)}")


def walk_keys(tree: dict, path: tuple[str, ...] = ()):
    """(path, key) for every key of a file (the defaults list and sweep params aside)."""
    for key, value in tree.items():
        if not path and key == "defaults":
            continue
        yield path, str(key)
        if isinstance(value, dict) and (path + (str(key),))[-3:] != ("hydra", "sweeper", "params"):
            yield from walk_keys(value, path + (str(key),))


@pytest.mark.parametrize("rel", YAMLS)
def test_every_key_is_an_option_of_its_consumer(rel):
    cfg = composed(*overrides_of(rel))
    package = package_of(rel)
    tree = yaml.safe_load((CONFIGS / rel).read_text()) or {}
    takes_whole = set()  # values a consumer takes as one argument (e.g. a mapping of domains)
    for path, key in walk_keys(tree):
        where = package + path
        if any(where[: i + 1] in takes_whole for i in range(len(where))):
            continue
        keys, consumer = accepted(cfg, where)
        name = ".".join((*path, key))
        assert keys is None or key in keys, (
            f"{rel}: key {name!r} is not an option of {consumer} (options: {sorted(keys or [])})"
        )
        # Below a node a callable takes whole (e.g. ScenarioConfig's source_domains mapping)
        # no key is an option, unless that node is itself built from a `_target_`.
        node = OmegaConf.select(cfg, ".".join((*where, key)), throw_on_resolution_failure=False)
        nested = isinstance(node, DictConfig) and "_target_" in node
        if where in (("callbacks",), ("logger",)):
            assert node is None or nested, f"{rel}: {name} needs a _target_"
        if not (keys is None or nested or not where or where == ("data",) or where[0] in OPEN):
            takes_whole.add((*where, key))
    for key, consumer in ROOT_CONSUMERS.items():
        if consumer is not None:
            assert f'"{key}"' in inspect.getsource(consumer) or f".{key}" in inspect.getsource(
                consumer
            ), f"train.yaml: {key!r} is no longer read by {consumer.__qualname__}"


def comment_lines(text: str) -> tuple[list[tuple[int, int]], set[int]]:
    """Each mapping key's (line, column), and the lines that carry a comment: a `#` after
    whitespace (or at the start) that lies inside no scalar, quoted ones included."""
    root = yaml.compose(text)
    keys, scalars = [], []

    def visit(node):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                keys.append((k.start_mark.line, k.start_mark.column))
                visit(k)
                visit(v)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                visit(item)
        else:
            scalars.append((node.start_mark, node.end_mark))

    if root is not None:
        visit(root)
    lines = text.splitlines()
    commented = set()
    for number, line in enumerate(lines):
        inside = [
            (s.column if s.line == number else 0, e.column if e.line == number else len(line))
            for s, e in scalars
            if s.line <= number <= e.line
        ]
        for match in re.finditer(r"(?:^|(?<=\s))#", line):
            if not any(a <= match.start() < b for a, b in inside):
                commented.add(number)
                break
    return keys, commented


@pytest.mark.parametrize("rel", YAMLS)
def test_every_key_carries_a_comment(rel):
    """On its line, or on the comment line right above it (README: every key is commented)."""
    text = (CONFIGS / rel).read_text()
    lines = text.splitlines()
    keys, commented = comment_lines(text)
    bare = [
        f"{rel}:{line + 1}: {lines[line].strip()}"
        for line, _ in keys
        if line not in commented and not (line > 0 and lines[line - 1].lstrip().startswith("#"))
    ]
    assert not bare, "keys without a comment:\n" + "\n".join(sorted(set(bare)))


def test_comment_check_sees_quoted_hashes_and_comment_blocks():
    keys, commented = comment_lines('a: "x # y"\n# why b\nb: 1\nc: 2  # why c\nd: {e: 1}\n')
    assert keys == [(0, 0), (2, 0), (3, 0), (4, 0), (4, 4)]
    assert commented == {1, 3}


# ----------------------------------------------------------------------------- one batch


def option_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_tensors():
    """A handful of items (the language model encodes them in well under a second)."""
    data = synthetic_data(n_users=24, n_items=8, per_user=6)
    scenario = build_scenario(
        data, ScenarioConfig(source_domains=["Books"], target_domains=["Films"], seed=0)
    )
    return ScenarioTensors(scenario, max_len=6)


@pytest.mark.parametrize("user_model", option_names("user_model"))
@pytest.mark.parametrize("encoder", option_names("encoder"))
def test_one_batch_of_every_encoder_and_user_model_trains(
    encoder, user_model, tiny_tensors, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    cfg = run_config(composed(f"encoder={encoder}", f"user_model={user_model}"), tmp_path)
    cfg.dim = 16
    cfg.loader.max_len = 6
    torch.manual_seed(0)
    strategy = build_strategy(cfg, tiny_tensors)
    datamodule = CrossDomainDataModule(tiny_tensors, strategy.streams, instantiate(cfg.loader))
    batch = next(iter(datamodule.train_dataloader()))
    strategy.train()
    loss = strategy.training_loss(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    for part in (strategy.tower.items, strategy.tower.users):
        trainable = [(n, p) for n, p in part.named_parameters() if p.requires_grad]
        assert trainable, f"{type(part).__name__}: nothing to train"
        assert all(p.grad is not None for _, p in trainable), [
            n for n, p in trainable if p.grad is None
        ]
        total = sum(float(p.grad.abs().sum()) for _, p in trainable)
        assert total > 0 and all(torch.isfinite(p.grad).all() for _, p in trainable)
    if encoder == "lora_text":  # the adapters themselves learn (LoRA's B starts at zero)
        adapters = [p for n, p in strategy.tower.items.named_parameters() if "lora_" in n]
        assert adapters and any(float(p.grad.abs().sum()) > 0 for p in adapters)


# ----------------------------------------------------------------------------- debug group


def recmig_train(tmp_path: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`recmig train` on the synthetic two-domain data, written as your own files."""
    data = synthetic_data(n_users=60, n_items=40, per_user=16)
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        *("train", "encoder=id"),
        *custom_table_overrides(tmp_path, data),
        f"hydra.run.dir={out}",
        *overrides,
    ]
    result = subprocess.run(
        [sys.executable, "-m", "recmig.cli", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_debug_one_batch_runs_one_batch_and_writes_no_checkpoint_or_logger(tmp_path):
    out = tmp_path / "run"
    # logger=csv and a small evaluation batch: debug=one_batch must still log nothing and
    # test only the first batch of users.
    recmig_train(tmp_path, out, "debug=one_batch", "logger=csv", "loader.eval_batch_size=4")
    metrics = json.loads((out / "metrics.json").read_text())
    test_users = metrics["scenario/cold/test_users"] + metrics["scenario/warm/users"]
    assert test_users > 4 and len(pd.read_parquet(out / "test_users.parquet")) == 4
    # The first batch of users is scored (here all warm: cold users come later in the order).
    assert metrics["epochs"] == 1 and "test/warm/ndcg@10" in metrics
    assert not list(out.rglob("*.ckpt")) and not (out / "checkpoints").exists()
    assert not (out / "csv").exists() and not (out / "wandb").exists()


def test_debug_overfit_drives_the_training_loss_down(tmp_path):
    out = tmp_path / "run"
    recmig_train(tmp_path, out, "debug=overfit", "logger=csv", "trainer.max_epochs=40")
    log = pd.read_csv(out / "csv" / "version_0" / "metrics.csv")
    loss = log["train/loss"].dropna().to_numpy()
    assert len(loss) == 40  # one step per epoch, every step logged, no early stop
    assert loss[-1] < loss[0] and loss[-5:].mean() < 0.8 * loss[:5].mean(), loss
