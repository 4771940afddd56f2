"""The docs name the tests that show each claim (docs/security.md above all): every test
they name must exist, so moving or renaming a test cannot leave a claim pointing at
nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "test_x.py::test_name", or "::test_name" for another test of the file named last;
# a name ending in "_" is a prefix ("test_audit12_*")
REF = re.compile(r"(test_[a-z0-9_]+\.py)?::(test_[A-Za-z0-9_]+)(\*?)")


def test_every_test_the_docs_name_exists():
    missing = []
    docs = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    named = 0
    for doc in docs:
        for line in doc.read_text().splitlines():
            last = None
            for m in REF.finditer(line):
                file, name, star = m.group(1) or last, m.group(2), m.group(3)
                last = file
                if file is None:
                    continue
                named += 1
                path = ROOT / "tests" / file
                source = path.read_text() if path.exists() else ""
                wanted = f"def {name}" if star or name.endswith("_") else f"def {name}("
                if wanted not in source:
                    missing.append(f"{doc.name}: {file}::{name}")
    assert not missing, missing
    assert named > 50  # the check saw the references, not nothing
