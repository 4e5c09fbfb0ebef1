# Source me (scripts/test.sh, scripts/colcon_test.sh): set up (idempotent), enter the environment, and install
# the synthetic-room generator that makes the test scenes (an optional extra of the package). In pip mode the
# generator is installed under the set-up's constraints, so that it cannot move numpy.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
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
