"""The import rules of the code's shape, as each package's ``__init__`` states them:

* ``functions.core`` is pure: its modules load without Firestore, Secret Manager, gRPC,
  Flask, werkzeug, urllib3 or requests (each is imported in a fresh interpreter: in this
  one, other tests have long loaded everything), and import no other package of ours;
* ``functions.store`` imports only the core;
* the three functions (``proxy``, ``admin``, ``log``) import the core, the store and the
  shared ``httpio``, never one another;
* every module of ``functions`` sits in one of these packages (``main`` and ``httpio``
  aside).

The package-level rules are read from the source (``import`` statements), so they also
hold for imports inside functions.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
FORBIDDEN = (
    "google.cloud.firestore",
    "google.cloud.secretmanager",
    "grpc",
    "flask",
    "werkzeug",
    "urllib3",
    "requests",
)
PACKAGES = ("core", "store", "proxy", "admin", "log")
# which of our packages each may import (besides itself)
MAY_IMPORT = {
    "core": set(),
    "store": {"core"},
    "proxy": {"core", "store", "httpio"},
    "admin": {"core", "store", "httpio"},
    "log": {"core", "store", "httpio"},
}
CORE = sorted(p.stem for p in (FUNCTIONS / "core").glob("*.py") if p.stem != "__init__")


def _loaded_by(module: str) -> list[str]:
    roots = sorted({f.split(".")[0] for f in FORBIDDEN})
    code = (
        f"import sys, json, {module}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(done.stdout)
    return [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_loads_no_storage_web_or_http_library(module: str) -> None:
    assert _loaded_by(f"functions.core.{module}") == []


def test_the_check_would_see_a_module_that_loads_firestore() -> None:
    assert "google.cloud.firestore" in _loaded_by("functions.store.client")


def _our_imports(path: Path) -> set[str]:
    """The first part after ``functions.`` of every import of ours in ``path``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "functions":
                names = [f"functions.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "functions" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_its_init_allows(package: str) -> None:
    wrong = {}
    for path in sorted((FUNCTIONS / package).glob("*.py")):
        bad = _our_imports(path) - MAY_IMPORT[package] - {package}
        if bad:
            wrong[path.name] = sorted(bad)
    assert not wrong, f"functions.{package} may import only {sorted(MAY_IMPORT[package])}"


def test_every_module_sits_in_a_package() -> None:
    loose = {p.stem for p in FUNCTIONS.glob("*.py")} - {"__init__", "main", "httpio"}
    assert not loose, f"place these in one of {PACKAGES}: {sorted(loose)}"
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((FUNCTIONS / package / "__init__.py").read_text()))
        assert doc and "May import" in doc, (
            f"functions/{package}/__init__.py says what it may import"
        )


STORAGE = ("google.cloud", "google.api_core")


@pytest.mark.parametrize("package", ["proxy", "admin", "log"])
def test_only_the_store_talks_to_firestore(package: str) -> None:
    """The functions hold store classes, never a Firestore client: no module of theirs
    imports the Google Cloud client libraries or builds a query of its own."""
    wrong = {}
    for path in sorted((FUNCTIONS / package).glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        imported = {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        } | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        bad = sorted(m for m in imported if m.startswith(STORAGE))
        calls = sorted(
            {
                n.func.attr
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr in ("collection", "batch", "transaction", "get_all", "query")
            }
        )
        if bad or calls:
            wrong[path.name] = bad + calls
    assert not wrong, f"functions.{package} reaches Firestore itself: {wrong}"
