"""The import rules of the code's shape: the pure rules (pricing, budget arithmetic,
tokens, SSE parsing, the body rules of the routes, errors, settings, the plain data of
a call) must load without Firestore, gRPC, Flask or an HTTP client, so that they can
be read, tested and reused without any of them.

Each module is imported in a fresh interpreter: in this one, other tests have long
loaded everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = (
    "google.cloud.firestore",
    "google.cloud.secretmanager",
    "grpc",
    "flask",
    "werkzeug",
    "urllib3",
    "requests",
)
PURE = (
    "admission",
    "auth",
    "billing",
    "budget",
    "cache",
    "cors",
    "encodings",
    "errors",
    "escrow",
    "holds",
    "ids",
    "price_table",
    "pricing",
    "quote",
    "reconcile",
    "records",
    "report_csv",
    "routes",
    "settings",
    "sse",
    "tokens",
    "validate",
)


def _loaded_by(module: str) -> list[str]:
    code = (
        f"import sys, json, functions.{module}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted({f.split('.')[0] for f in FORBIDDEN})!r})))"
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


@pytest.mark.parametrize("module", PURE)
def test_pure_module_loads_no_storage_web_or_http_library(module: str) -> None:
    assert _loaded_by(module) == []


def test_the_check_would_see_a_module_that_loads_firestore() -> None:
    assert "google.cloud.firestore" in _loaded_by("store")


def test_every_module_is_either_pure_or_named_here() -> None:
    """A new module must be placed on purpose: in PURE (and then stay pure), or among
    those that do I/O."""
    io = {
        "admin",
        "admin_handlers",
        "admin_json",
        "admin_members",
        "admin_topups",
        "alerts",
        "books",
        "burn",
        "callhooks",
        "external_keys",
        "grant_desk",
        "grants",
        "httpio",
        "indexes",
        "ledger",
        "logpage",
        "main",
        "membership",
        "price_loader",
        "provision",
        "proxy",
        "report_filters",
        "report_groups",
        "reports",
        "secret_store",
        "store",
        "streaming",
        "sweep",
        "upstream",
        # reconciliation: OpenAI's Usage/Costs APIs, a run, its routes, scheduler tokens
        "usage_api",
        "reconcile_run",
        "admin_reconcile",
        "oidc",
        # the admin console's static files (web/admin/)
        "console",
    }
    modules = {p.stem for p in (ROOT / "functions").glob("*.py")} - {"__init__"}
    unplaced = modules - io - set(PURE)
    assert not unplaced, f"place these in PURE or in the I/O list: {sorted(unplaced)}"
