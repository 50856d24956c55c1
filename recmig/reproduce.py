"""``recmig reproduce <experiment> [--quick | --section NAME]``: rerun an experiment, check it.

Every experiment folder (``experiments/<name>/``) holds a ``reproduce.yaml``::

    full:                       # the experiment as committed
      sweep: [experiment=p1_sasrec_ml1m]     # `recmig train -m` overrides
      expected:                 # recorded means over seeds, each with its tolerance
        - {strategy: target_only, metric: test/warm/ndcg@10, mean: 0.1386, tolerance: 0.005}
      analyses: [stream, "faithfulness --max-users 100"]   # optional: commands run over
                                # every run folder after the sweep; their summaries are
                                # metrics (streaming/..., faithfulness/...) like any other
    quick:                      # a small version of the same pipeline, minutes on a CPU (CI)
      sweep: [...]
      expected: [...]
    <name>:                     # optional: rows added by a sweep of their own (--section)
      sweep: [...]
      expected: [...]

The command runs the sweep (a Hydra multirun, as ``recmig train -m`` would), aggregates it
like ``recmig report`` (mean over seeds per setting and strategy), prints recorded against
fresh numbers and exits with status 1 when a number leaves its tolerance or is missing.
``--from <sweep dir>...`` checks existing sweeps instead of running one (an experiment run
as several smaller sweeps is checked as one); ``--record`` writes the
fresh means into ``reproduce.yaml`` (tolerances kept), for a new or deliberately changed
experiment. A version whose ``expected`` list is empty has not been measured yet: it runs and
reports, and says that nothing was checked.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from recmig.atomic import write_text_atomic
from recmig.report import collect, report_folder, write_report
from recmig.report.runs import unfinished_jobs

SPEC = "reproduce.yaml"


def load_spec(folder: Path, mode: str) -> dict:
    path = folder / SPEC
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reproduce.yaml (is {folder} an experiment folder?)")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if mode not in spec:
        raise ValueError(f"{path}: no {mode!r} section (its sections: {sorted(spec)})")
    section = spec[mode]
    for key in ("sweep", "expected"):
        if key not in section:
            raise ValueError(f"{path}: section {mode!r} lacks {key!r}")
    for i, row in enumerate(section["expected"]):
        missing = {"strategy", "metric", "mean", "tolerance"} - set(row)
        if missing:
            raise ValueError(f"{path}: {mode}.expected[{i}] lacks {sorted(missing)}")
    return section


def run_sweep(overrides: list[str], out: Path) -> None:
    command = [sys.executable, "-m", "recmig.cli", "train", "-m", *overrides]
    command.append(f"hydra.sweep.dir={out}")
    print("running:", " ".join(command[2:]), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"recmig reproduce: the sweep failed (exit {done.returncode})")


def run_analyses(commands: list[str], sweep_dir: Path) -> None:
    """Each ``recmig <command> [options]`` of the spec over every run folder of the sweep."""
    runs = sorted(str(p.parent) for p in sweep_dir.rglob("metrics.json"))
    for command in commands:
        name, *options = command.split()
        if name not in ("stream", "faithfulness"):
            raise SystemExit(f"recmig reproduce: error: analyses: unknown command {name!r}")
        print(f"running: recmig {command} over {len(runs)} runs", flush=True)
        cli = [sys.executable, "-m", "recmig.cli", name, *runs, *options]
        if subprocess.run(cli).returncode != 0:
            raise SystemExit(f"recmig reproduce: `recmig {command}` failed")


def compare(expected: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per recorded number: recorded, tolerance, fresh mean, seeds and whether it holds.

    A recorded ``setting`` (``data.scenario.cold_fraction=0.2``) is matched against each run's
    overrides, not against the report's setting label: the label names only what varies in
    the sweep at hand, so a sweep of beta 0.2 alone checks the full experiment's numbers too.
    """
    overrides = runs["overrides"].map(json.loads)
    rows = []
    for row in expected:
        setting = row.get("setting", "")
        wanted = dict(o.split("=", 1) for o in setting.split())
        matches = overrides.map(lambda o, w=wanted: all(o.get(k) == v for k, v in w.items()))
        part = runs[(runs["strategy"] == row["strategy"]) & matches]
        values = part[row["metric"]].dropna() if row["metric"] in part.columns else pd.Series()
        # Runs of several settings matched (the record names fewer keys than vary): ambiguous.
        found = not values.empty and part["setting"].nunique() == 1
        fresh = float(values.mean()) if found else math.nan
        rows.append(
            {
                "setting": setting or "(default)",
                "strategy": row["strategy"],
                "metric": row["metric"],
                "recorded": row["mean"],
                "tolerance": row["tolerance"],
                "fresh": fresh,
                "seeds": len(values) if found else 0,
                "ok": found and abs(fresh - row["mean"]) <= row["tolerance"],
            }
        )
    return pd.DataFrame(rows)


def record(folder: Path, mode: str, checked: pd.DataFrame) -> None:
    """Write the fresh means into reproduce.yaml in place (atomically), keeping its comments.

    Expected entries are one flow mapping per line (``- {strategy: ..., mean: ...}``).
    """
    path = folder / SPEC
    lines = path.read_text().splitlines(keepends=True)
    fresh = iter(checked["fresh"].tolist())
    section = None
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z_]+:", line):
            section = line.split(":", 1)[0]
        elif section == mode and re.match(r"^\s*- \{.*\bmean: ", line):
            value = next(fresh, math.nan)
            if math.isnan(value):
                raise ValueError(f"{path}: line {i + 1}: its metric is not in the fresh sweep")
            lines[i] = re.sub(r"\bmean: [^,}]+", f"mean: {value:.4f}", line)
    if next(fresh, None) is not None:
        raise ValueError(f"{path}: write {mode}.expected as one '- {{...}}' entry per line")
    write_text_atomic(path, "".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recmig reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", help="folder name under --experiments (or a path)")
    parser.add_argument("--quick", action="store_true", help="the small version (CI)")
    parser.add_argument(
        "--section",
        help="another section of reproduce.yaml than full and quick (e.g. trained: rows added "
        "by their own sweep)",
    )
    parser.add_argument("--experiments", type=Path, default=Path("experiments"))
    parser.add_argument(
        "--out",
        type=Path,
        help="folder of the sweep and its report (default: outputs/reproduce/...; with --from, "
        "the first sweep folder)",
    )
    parser.add_argument(
        "--from", dest="existing", type=Path, nargs="+", help="check these sweeps, run nothing"
    )
    parser.add_argument("--record", action="store_true", help="store the fresh means as expected")
    args = parser.parse_args(argv)

    folder = Path(args.experiment)
    if not (folder / SPEC).is_file():
        folder = args.experiments / args.experiment
    if args.quick and args.section:
        parser.error("--quick and --section: choose one section")
    mode = args.section or ("quick" if args.quick else "full")
    try:
        section = load_spec(folder, mode)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"recmig reproduce: error: {err}") from None
    sweep_dirs = args.existing
    if sweep_dirs is None:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        sweep_dirs = [args.out or Path("outputs/reproduce") / f"{folder.name}-{mode}" / stamp]
        run_sweep(section["sweep"], sweep_dirs[0])
        run_analyses(section.get("analyses", []), sweep_dirs[0])
    try:
        sweep_dir = report_folder(sweep_dirs, args.out)
        runs = collect(sweep_dirs)
        unfinished = unfinished_jobs(sweep_dirs)  # named in the report, not silently missing
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"recmig reproduce: error: {err}") from None
    if not section["expected"]:
        write_report(runs, sweep_dir, unfinished=unfinished)
        print(
            f"\n{folder.name} ({mode}): NOTHING CHECKED - no numbers are recorded for this "
            f"version yet; the sweep's report is in {sweep_dir}"
        )
        return
    metrics = dict.fromkeys(r["metric"] for r in section["expected"] if r["metric"] in runs)
    write_report(runs, sweep_dir, tuple(metrics), unfinished=unfinished)
    checked = compare(section["expected"], runs)
    print(f"\n{folder.name} ({mode}): recorded vs fresh, sweep in {sweep_dir}")
    print(checked.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.record:
        record(folder, mode, checked)
        print(f"recorded the fresh means in {folder / SPEC}")
        return
    failed = checked[~checked["ok"]]
    if not failed.empty:
        raise SystemExit(f"recmig reproduce: {len(failed)} number(s) outside their tolerance")
    print("all numbers within tolerance")
