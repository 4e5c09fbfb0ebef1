#!/usr/bin/env bash
# README's test command: set up (idempotent) and run the whole test suite.
#   bash scripts/test.sh [pytest args...]
#   SRAY_ROS_DISTRO=jazzy bash scripts/test.sh [pytest args...]   # against the ROS 2 Jazzy wheels
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# The synthetic-room generator (an optional extra of the package) makes the test scenes; in pip mode under
# the set-up's constraints, so that it cannot move numpy.
if [[ -z "${ROS_DISTRO:-}" ]]; then
  if [[ $SRAY_ROS_DISTRO == kilted ]]; then
    export PIP_CONSTRAINT=$ROOT/requirements/constraints.txt
  else
    export PIP_CONSTRAINT=$ROOT/requirements/constraints-$SRAY_ROS_DISTRO.txt
  fi
fi
bash "$ROOT/scripts/install_generator_deps.sh" "$VIRTUAL_ENV"
unset PIP_CONSTRAINT
export SRAY_REQUIRE_GENERATOR=1 PYOPENGL_PLATFORM=egl
cd "$ROOT"
# `pytest` (not `python -m pytest`): the repo root must not shadow the installed sray_ros package.
exec pytest -n "${SRAY_TEST_WORKERS:-2}" --dist loadfile "$@"
