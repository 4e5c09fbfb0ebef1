#!/usr/bin/env bash
# README's test command: set up (idempotent) and run the whole test suite.
#   bash scripts/test.sh [pytest args...]
#   SRAY_ROS_DISTRO=jazzy bash scripts/test.sh [pytest args...]   # against the ROS 2 Jazzy wheels
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/test_env.sh"
cd "$ROOT"
# `pytest` (not `python -m pytest`): the repo root must not shadow the installed sray_ros package.
exec pytest -n "${SRAY_TEST_WORKERS:-2}" --dist loadfile "$@"
