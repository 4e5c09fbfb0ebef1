# Sourced by scripts/setup.sh and scripts/env.sh: which ROS 2 distro, and where its venv and colcon
# workspace live, so that Kilted and Jazzy set-ups of one checkout sit side by side.
#   in:  ROOT (the repository), MODE (pip | distro), SRAY_ROS_DISTRO (pip mode: kilted (default) | jazzy),
#        SRAY_VENV (optional: the Kilted venv's path; other distros append -<distro>)
#   out: SRAY_ROS_DISTRO, VENV, WS; returns 1 with a message on a distro it cannot set up.
# The venv lives outside the source tree: the package root is the repo root, and CMake refuses include
# paths under the source directory (numpy's, from a venv inside it) on exported targets.
if [[ $MODE == distro ]]; then
  if [[ -n "${SRAY_ROS_DISTRO:-}" && "$SRAY_ROS_DISTRO" != "$ROS_DISTRO" ]]; then
    echo "[sray] SRAY_ROS_DISTRO=$SRAY_ROS_DISTRO but ROS 2 $ROS_DISTRO is sourced: unset one" >&2
    return 1
  fi
  SRAY_ROS_DISTRO=$ROS_DISTRO
  _sray_suffix=-$ROS_DISTRO-distro
else
  SRAY_ROS_DISTRO=${SRAY_ROS_DISTRO:-kilted}
  case $SRAY_ROS_DISTRO in
    kilted) _sray_suffix= ;;
    jazzy) _sray_suffix=-jazzy ;;
    *) echo "[sray] SRAY_ROS_DISTRO=$SRAY_ROS_DISTRO: pip mode knows kilted and jazzy" >&2; return 1 ;;
  esac
fi
if [[ -n "${SRAY_VENV:-}" ]]; then
  VENV=$SRAY_VENV$_sray_suffix
else
  VENV=${XDG_CACHE_HOME:-$HOME/.cache}/sray_ros/venv-$(printf %s "$ROOT" | sha256sum | cut -c1-12)$_sray_suffix
fi
WS=$ROOT/.ros_ws$_sray_suffix
unset _sray_suffix
