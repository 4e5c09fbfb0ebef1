# Source me: puts the venv and the colcon install of sray_ros on the paths (after scripts/setup.sh).
#   source scripts/env.sh                          # the default set-up (ROS 2 Kilted wheels, or the sourced distro)
#   SRAY_ROS_DISTRO=jazzy source scripts/env.sh    # the Jazzy-wheel set-up (setup.sh with the same variable)
# Exports SRAY_ROS_DISTRO, SRAY_WS (the colcon workspace) and SRAY_INSTALL_PREFIX for the tests and tools.
_sray_nounset=0; [[ $- == *u* ]] && _sray_nounset=1; set +u
_sray_env() {
  local ROOT MODE=pip VENV WS
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  [[ -n "${ROS_DISTRO:-}" ]] && MODE=distro
  # shellcheck source=scripts/paths.sh
  source "$ROOT/scripts/paths.sh" || return 1
  if [[ ! -f "$WS/install/setup.bash" || ! -f "$VENV/bin/activate" ]]; then
    echo "[sray] $WS is not built: run SRAY_ROS_DISTRO=$SRAY_ROS_DISTRO bash scripts/setup.sh" >&2
    return 1
  fi
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
  if [[ $MODE == pip ]]; then
    export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
  fi
  # shellcheck disable=SC1091
  source "$WS/install/setup.bash"
  # install/setup.bash replaces AMENT_PREFIX_PATH; the wheels' prefix (the venv) must stay on it.
  if [[ $MODE == pip ]]; then
    export AMENT_PREFIX_PATH=$AMENT_PREFIX_PATH:$VENV
  fi
  # Keep DDS traffic on this machine unless the caller chose otherwise.
  export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
  export ROS_LOG_DIR=${ROS_LOG_DIR:-$WS/log/ros}
  export SRAY_ROOT=$ROOT SRAY_ROS_DISTRO SRAY_WS=$WS SRAY_INSTALL_PREFIX=$WS/install/sray_ros
}
if _sray_env; then _sray_ok=1; else _sray_ok=0; fi
unset -f _sray_env
((_sray_nounset)) && set -u
unset _sray_nounset
if ((_sray_ok)); then unset _sray_ok; else unset _sray_ok; return 1; fi
