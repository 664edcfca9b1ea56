"""Every name the benchmarks import from hubmgr (and from the tests' helpers) exists. The sections import inside their
functions (Django is set up by then), so a name moved or renamed in hubmgr broke `make bench`
only when that section ran, an hour in; here it fails at once."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def imported_names():
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                    "hubmgr", "tests"):
                for alias in node.names:
                    yield pytest.param(node.module, alias.name, id=f"{path.name}:{node.lineno}:"
                                                                  f"{node.module}.{alias.name}")


@pytest.mark.parametrize(("module", "name"), list(imported_names()))
def test_the_name_a_benchmark_imports_exists(module, name):
    found = importlib.import_module(module)
    assert hasattr(found, name) or importlib.util.find_spec(f"{module}.{name}"), \
        f"bench imports {name} from {module}, which has no such name"
