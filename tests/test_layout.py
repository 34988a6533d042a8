"""The house: imports point one way, down the floors, with no circles (issue 14).

Walks every `import` in pipeline/ and dags/ (function-level ones too: a lazy import is still a
dependency) and checks it against the floors below. Run it alone with

    .venv/bin/python -m pytest tests/test_layout.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a module may import a module of a lower floor, or of its own package (without a circle)
FLOORS = {
    "pipeline": 0,  # the package itself: __version__
    "pipeline.errors": 0,
    "pipeline.contract": 0,
    "pipeline.engine": 1,
    "pipeline.config": 1,
    "pipeline.progress": 1,
    "pipeline.domain": 2,
    "pipeline.store": 3,
    "pipeline.intake": 4,
    "pipeline.stages": 5,
    "pipeline.job": 6,
    "pipeline.report": 6,
    "pipeline.tools": 6,
    "pipeline.schedule": 7,
    "pipeline.cli": 8,
}
DAG_IMPORTS = {"pipeline.job", "pipeline.schedule", "pipeline.config", "pipeline.errors"}
# the domain computes; it neither reads nor writes files, databases or object stores
DOMAIN_FORBIDDEN = ("os", "shutil", "tempfile", "pathlib", "sqlalchemy", "pyarrow.parquet", "pyarrow.fs",
                    "pyarrow.dataset", "pyarrow.ipc", "pyarrow.csv", "boto3", "subprocess")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> tuple[str, int]:
    """The package (or top-level module) of `module` and its floor."""
    parts = module.split(".")
    for n in (2, 1):
        key = ".".join(parts[:n])
        if key in FLOORS:
            return key, FLOORS[key]
    raise AssertionError(f"{module} is on no floor: add it to FLOORS")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`, resolved to the modules it names."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from pipeline.domain import bom` imports the module pipeline.domain.bom
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                      if (ROOT / node.module.replace(".", "/") / f"{a.name}.py").exists()
                      or (ROOT / node.module.replace(".", "/") / a.name / "__init__.py").exists()]
    return found


def pipeline_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        name = module_name(path)
        targets = {m for _, m in imports(path) if m.split(".")[0] == "pipeline"}
        known = {t for t in targets if (ROOT / (t.replace(".", "/") + ".py")).exists()}
        graph[name] = known - {name}
    return graph


def test_every_import_goes_down_a_floor_or_stays_in_its_package() -> None:
    wrong = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        name = module_name(path)
        package, floor = floor_of(name)
        for line, target in imports(path):
            if target.split(".")[0] != "pipeline" or target == "pipeline":
                continue
            target_package, target_floor = floor_of(target)
            if target_package == package or target_floor < floor:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} (floor {target_floor}, "
                         f"not below {package}'s {floor})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles() -> None:
    graph = pipeline_graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_walk_sees_the_imports_it_judges() -> None:
    """The checks above are not vacuous: the graph holds the known edges, lazy imports included."""
    graph = pipeline_graph()
    assert "pipeline.domain.bom" in graph["pipeline.domain.consumption"]
    assert "pipeline.stages.read" in graph["pipeline.job"]
    assert "pipeline.store.objectstore" in graph["pipeline.store.warehouse"]  # imported inside functions
    assert floor_of("pipeline.intake.scan") == ("pipeline.intake", 4)


def test_domain_modules_do_no_io() -> None:
    wrong = []
    for path in sorted((ROOT / "pipeline" / "domain").glob("*.py")):
        for line, target in imports(path):
            if target in DOMAIN_FORBIDDEN or target.split(".")[0] in ("os", "shutil", "tempfile", "pathlib"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
        text = path.read_text()
        assert "open(" not in text.replace("reopen(", ""), f"{path.name} opens a file"
    assert not wrong, "\n".join(wrong)


def test_dags_call_the_job_and_the_schedule_only() -> None:
    wrong = []
    for path in sorted((ROOT / "dags").glob("*.py")):
        for line, target in imports(path):
            if target.split(".")[0] == "pipeline" and target not in DAG_IMPORTS | {"pipeline"}:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)
