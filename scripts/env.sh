# Source me: puts the venv and the colcon install of sray_ros on the paths (after scripts/setup.sh).
#   source scripts/env.sh
_sray_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_sray_venv=${SRAY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sray_ros/venv-$(printf %s "$_sray_root" | sha256sum | cut -c1-12)}
_sray_nounset=0; [[ $- == *u* ]] && _sray_nounset=1; set +u
# shellcheck disable=SC1091
source "$_sray_venv/bin/activate"
if [[ -z "${ROS_DISTRO:-}" ]]; then
  export AMENT_PREFIX_PATH=$_sray_venv CMAKE_PREFIX_PATH=$_sray_venv
fi
# shellcheck disable=SC1091
source "$_sray_root/.ros_ws/install/setup.bash"
# install/setup.bash replaces AMENT_PREFIX_PATH; the wheels' prefix (the venv) must stay on it.
if [[ -z "${ROS_DISTRO:-}" ]]; then
  export AMENT_PREFIX_PATH=$AMENT_PREFIX_PATH:$_sray_venv
fi
# Keep DDS traffic on this machine unless the caller chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export ROS_LOG_DIR=${ROS_LOG_DIR:-$_sray_root/.ros_ws/log/ros}
export SRAY_ROOT=$_sray_root
((_sray_nounset)) && set -u
unset _sray_root _sray_venv _sray_nounset
