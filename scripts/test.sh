#!/usr/bin/env bash
# Run every check: lint, types, and the whole test suite (emulator and loopback upstream included).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The browser tests drive Debian's Chromium; install it where we can (CI runs as root).
if { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; } \
   && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
.venv/bin/ruff check functions tests scripts
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
