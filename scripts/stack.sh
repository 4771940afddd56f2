#!/usr/bin/env bash
# Run the whole stack locally (emulator, fake upstream unless OPENAI_API_KEY is set, functions).
set -euo pipefail
# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/python -m scripts.stack "$@"
