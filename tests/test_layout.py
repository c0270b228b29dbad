"""The layout is the pipeline: each stage of ``study`` imports only the stages below it, and no
module imports itself through others (an import loop).

Stages, bottom to top: ``core`` (log joint, settings, results, files) -> ``checks`` (shape
check, fixed point) -> ``methods`` -> ``run`` (runner, cache) -> ``report`` -> the command
line (``study.compare``, ``study.diagnose``). Imports inside functions count too: a lazy import only hides a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["core", "checks", "methods", "run", "report"]
TOP = len(STAGES)  # study/__init__.py and the command lines, study/compare.py and study/diagnose.py


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def study_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "study").rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``study`` modules that ``name`` imports (absolute or relative, at any depth)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for target in targets:
            # ``import study.methods.svi`` imports study.methods.svi; a name imported from a
            # module (``from study.core.results import Fit``) is not a module and is dropped.
            if target in known and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def stage(name: str) -> int:
    parts = name.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else TOP


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = study_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_sits_in_a_stage_or_is_the_command_line():
    loose = [n for n in study_modules() if stage(n) == TOP and n not in ("study", "study.compare", "study.diagnose")]
    assert not loose, f"modules outside the stage folders: {loose}"


def test_no_stage_imports_a_stage_above_it(graph):
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if stage(b) > stage(a)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def find_loops(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, loops, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return loops


def test_no_import_loops(graph):
    loops = find_loops(graph)
    assert not loops, "import loops: " + "; ".join(" <-> ".join(sorted(c)) for c in loops)


def test_the_checks_catch_a_loop_and_an_upward_import(tmp_path):
    """The detector itself: a planted loop and planted upward imports (relative, absolute, lazy) are found."""
    planted = {"study.core.a": {"study.core.b"}, "study.core.b": {"study.core.a"}, "study.report.x": set()}
    assert find_loops(planted) == [{"study.core.a", "study.core.b"}]
    fake = tmp_path / "fake.py"
    fake.write_text("from ..methods import svi\n\ndef f():\n    import study.report.build\n")
    found = imports_of("study.core.fake", fake, set(study_modules()))
    assert found == {"study.methods", "study.methods.svi", "study.report.build"}
    assert all(stage(t) > stage("study.core.fake") for t in found)


def test_no_folder_of_a_script_directory_shadows_a_project_package():
    # ``python benchmarks/speed.py`` puts benchmarks/ first on sys.path: a benchmarks/models/
    # folder made ``from models import builtin_models`` find that folder instead of the package.
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    for scripts in ("benchmarks", "tests"):
        clash = sorted(p.name for p in (ROOT / scripts).iterdir() if p.is_dir() and p.name in packages)
        assert not clash, f"{scripts}/ holds folders named like project packages: {clash}"


def test_the_command_line_imports_no_plotting_or_scikit_learn_until_it_needs_them():
    # A warm rerun draws no figure and reads every data set from its own file: importing the
    # whole pipeline must not import matplotlib (0.4 s), scikit-learn or SciPy (1.1 s).
    import subprocess
    import sys

    code = ("import sys, study.compare, study.report.write, study.report.build, study.run.runner; "
            "print(sorted(m for m in ('matplotlib', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"
