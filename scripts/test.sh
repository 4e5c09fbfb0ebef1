#!/usr/bin/env bash
# README's test command: set up (idempotent) and run the whole test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# The synthetic-room generator (an optional extra of the package) makes the test scenes.
bash "$ROOT/scripts/install_generator_deps.sh" "$VIRTUAL_ENV"
export SRAY_REQUIRE_GENERATOR=1 PYOPENGL_PLATFORM=egl
cd "$ROOT"
# `pytest` (not `python -m pytest`): the repo root must not shadow the installed sray_ros package.
exec pytest -n "${SRAY_TEST_WORKERS:-2}" --dist loadfile "$@"
