"""recmig's modules import in one direction: no cycle, so any module can be imported alone.

The graph is read from the source: every ``import``/``from`` statement, inside functions too (a
late import only hides a cycle until that function runs), except those under
``if TYPE_CHECKING:``, which never run. The check costs no imports and names the cycle it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"recmig": ROOT / "recmig", "recmig_strategies": ROOT / "strategies"}


def module_files() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, modules: set[str], name: str = "") -> set[str]:
    """The project modules ``path`` (module ``name``) imports (a ``from a import b`` of a
    submodule ``a.b`` counts as importing ``a.b``; ``from .a import b`` is resolved against
    ``name``'s package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    imported = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            imported.add(module)
            imported.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in imported if name in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_module_import_graph_has_no_cycle():
    files = module_files()
    assert "recmig.strategy" in files and "recmig_strategies.fusion" in files
    graph = {}
    for name, path in files.items():
        # A package's __init__ importing its own submodules is not a cycle with them.
        graph[name] = {m for m in imports_of(path, set(files), name) if m != name}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_serving_a_finished_run_imports_no_training_stack():
    """`recmig recommend` and `recmig serve` start in the time of torch's import plus the run:
    the modules they load must not pull in Lightning (seconds of imports) or torchmetrics."""
    import subprocess
    import sys

    code = (
        "import sys, recmig.serving.http, recmig.run, recmig.cli; "
        "print(sorted(m for m in ('lightning', 'torchmetrics') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_strategy_imports_another_strategy():
    """A strategy plugin depends on ``recmig`` only: what two strategies share (a model, its
    math) lives in ``recmig``, so any strategy file can be copied out as a plugin's start."""
    files = module_files()
    strategies = {name for name in files if name.startswith("recmig_strategies.")}
    assert {"recmig_strategies.ridge_map", "recmig_strategies.feature_averaging"} <= strategies
    crossing = {
        name: sorted(imports_of(files[name], set(files), name) & strategies) for name in strategies
    }
    assert {name: found for name, found in crossing.items() if found} == {}


def test_relative_imports_are_resolved(tmp_path):
    """``from .a import b`` inside a package counts, as ``from package.a import b`` would."""
    module = tmp_path / "one.py"
    module.write_text("from .two import Thing\nfrom . import three\n")
    init = tmp_path / "__init__.py"
    init.write_text("from .two import Thing\n")
    modules = {"pkg.two", "pkg.three", "pkg.one"}
    assert imports_of(module, modules, "pkg.one") == {"pkg.two", "pkg.three"}
    assert imports_of(init, modules, "pkg") == {"pkg.two"}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_serving_report_and_benchmark_do_not_import_the_train_entry_point():
    """Opening a finished run, reporting and benchmarking need a run's parts, not ``recmig
    train``: they reach ``recmig.run`` and ``recmig.training.build``, never ``recmig.train``."""
    files = module_files()
    graph = {name: imports_of(path, set(files), name) - {name} for name, path in files.items()}
    users = [
        name
        for name in files
        if name.startswith(("recmig.serving", "recmig.report")) or name == "recmig.benchmark"
    ]
    assert "recmig.serving.recommender" in users and "recmig.report" in users
    assert {name for name in users if "recmig.train" in reachable(graph, name)} == set()


def test_the_model_side_never_imports_what_runs_it():
    """The import plan runs one way: batches, strategies (trained and closed form), encoders,
    user models, objectives and the evaluator sit below training, serving and reports, so none
    of them reaches ``recmig.training``, ``recmig.train``, serving or report (an arrow back up
    would make a strategy depend on the loop that runs it)."""
    files = module_files()
    graph = {name: imports_of(path, set(files), name) - {name} for name, path in files.items()}
    # (``from recmig import x`` names the package, whose one import, ``recmig.Recommender``,
    # runs only when that attribute is asked for)
    graph["recmig"] = set()
    model_side = [
        name
        for name in files
        if name.startswith(("recmig_strategies", "recmig.encoders", "recmig.users"))
        or name
        in {
            "recmig.batches",
            "recmig.strategy",
            "recmig.closed_form",
            "recmig.objectives",
            "recmig.evaluation.evaluator",
            "recmig.fusion",
            "recmig.item_map",
        }
    ]
    above = ("recmig.training", "recmig.train", "recmig.serving", "recmig.report")
    arrows = {
        (name, up)
        for name in model_side
        for up in reachable(graph, name)
        if any(up == a or up.startswith(f"{a}.") for a in above)
    }
    assert len(model_side) > 25 and arrows == set()
