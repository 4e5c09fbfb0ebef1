#!/usr/bin/env bash
# README's test command: set up (idempotent) and run the whole test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
# `pytest` (not `python -m pytest`): the repo root must not shadow the installed sray_ros package.
exec pytest -n "${SRAY_TEST_WORKERS:-2}" "$@"
