#!/usr/bin/env bash
# Run every check: lint, types, and the whole test suite (emulator and loopback upstream included).
set -euo pipefail
# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The browser tests drive Debian's Chromium and deploy.sh is checked by shellcheck;
# install them where we can (CI runs as root).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
shellcheck -x deploy.sh scripts/*.sh .ci/run
.venv/bin/ruff check functions tollgate_cli tests scripts bench
.venv/bin/ruff format --check functions tollgate_cli tests scripts bench
.venv/bin/mypy
# The whole suite (no arguments) runs in TOLLGATE_TEST_WORKERS processes (pytest-xdist,
# each with its own emulator: most of a test's time is spent waiting on the emulator,
# the browser or a subprocess, so two workers on two cores take ~40 % less time), and
# also measures branch coverage and fails under the floor in pyproject.toml. A run of
# chosen tests runs in one process and measures nothing.
if [ "$#" -eq 0 ]; then set -- -n "${TOLLGATE_TEST_WORKERS:-2}" --cov --cov-report=term; fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
