#!/usr/bin/env bash
# Idempotent set-up of a development / CI machine for sray_ros.
#
#   bash scripts/setup.sh          # venv + dependencies + colcon build (seconds when nothing changed)
#
# Two modes, chosen automatically:
# * distro mode: a ROS 2 distro is sourced (ROS_DISTRO set and its rclpy importable). The venv sees the
#   distro's packages (--system-site-packages); only the Python dependencies are pip-installed, and the
#   package is built with the distro's colcon.
# * pip mode (machines without ROS, e.g. CI): ROS 2 Kilted comes from PyPI wheels
#   (requirements/ros-wheels.txt); their CMake files are repointed at this venv's Python, and the
#   one-message tf2_msgs stand-in in ros_shims/ is built because no wheel carries tf2_msgs.
# Result: .venv/ and the colcon workspace .ros_ws/ (build/, install/, log/). scripts/env.sh sources both.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The venv lives outside the source tree: the package root is the repo root, and CMake refuses include
# paths under the source directory (numpy's, from a venv inside it) on exported targets. .venv is a
# convenience symlink to it.
VENV=${SRAY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sray_ros/venv-$(printf %s "$ROOT" | sha256sum | cut -c1-12)}
WS=$ROOT/.ros_ws
PYTHON_BIN=${SRAY_PYTHON:-python3}
mkdir -p "$WS"
LOG=$WS/setup.log

say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s (log: %s)\n' "$*" "$LOG" >&2; tail -n 30 "$LOG" >&2 || true; exit 1; }

MODE=pip
if [[ -n "${ROS_DISTRO:-}" ]] && "$PYTHON_BIN" -c 'import rclpy' >/dev/null 2>&1; then
  MODE=distro
fi

# Everything that decides what gets installed or built. File *contents* of the Python sources are not
# part of it: the build is a symlink install, so edits are live; new or removed files need a rebuild.
fingerprint() {
  {
    echo "mode=$MODE distro=${ROS_DISTRO:-} venv=$VENV root=$ROOT"
    cat "$ROOT"/requirements/*.txt "$ROOT/scripts/setup.sh"
    cat "$ROOT/package.xml" "$ROOT/CMakeLists.txt" "$ROOT/setup.py" "$ROOT"/msg/* "$ROOT"/ros_shims/tf2_msgs/msg/*
    (cd "$ROOT" && find sray_ros launch config models scripts -type f ! -path '*__pycache__*' | LC_ALL=C sort)
  } | sha256sum | cut -d' ' -f1
}
STAMP=$WS/.setup-stamp
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(fingerprint)" && -x "$VENV/bin/python" \
      && -f "$WS/install/setup.bash" ]]; then
  say "up to date ($MODE mode); nothing to do"
  exit 0
fi
: > "$LOG"

# ---- 1. virtual environment ----------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV"
  if [[ $MODE == distro ]]; then
    "$PYTHON_BIN" -m venv --system-site-packages "$VENV" >>"$LOG" 2>&1 || fail "venv creation failed"
  else
    "$PYTHON_BIN" -m venv "$VENV" >>"$LOG" 2>&1 || fail "venv creation failed"
  fi
fi
[[ -e "$ROOT/.venv" || -L "$ROOT/.venv" ]] || ln -s "$VENV" "$ROOT/.venv"
PY=$VENV/bin/python
"$PY" -m pip install -q --disable-pip-version-check -U 'pip>=24' >>"$LOG" 2>&1 || fail "pip upgrade failed"

# ---- 2. dependencies (pinned; pip skips what is already satisfied) -------------------------------
REQS=(-r "$ROOT/requirements/python.txt" -r "$ROOT/requirements/test.txt")
[[ $MODE == pip ]] && REQS+=(-r "$ROOT/requirements/ros-wheels.txt")
say "installing pinned dependencies ($MODE mode)"
"$PY" -m pip install -q --disable-pip-version-check "${REQS[@]}" -c "$ROOT/requirements/constraints.txt" \
  >>"$LOG" 2>&1 || fail "pip install failed"

# ---- 3. pip mode: repoint the wheels' CMake files at this venv's Python ---------------------------
if [[ $MODE == pip ]]; then
  PY_INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NP_INC=$(realpath "$("$PY" -c 'import numpy; print(numpy.get_include())')")
  { grep -rl '/opt/python/cp3' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$NP_INC#g" \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$PY_INC#g"
fi

# ---- 4. colcon build ----------------------------------------------------------------------------
say "building sray_ros with colcon"
BASE_PATHS=("$ROOT")
if [[ $MODE == pip ]]; then
  export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
  if ! "$PY" -c 'import tf2_msgs.msg' >/dev/null 2>&1; then BASE_PATHS+=("$ROOT/ros_shims/tf2_msgs"); fi
  COLCON=$VENV/bin/colcon
else
  COLCON=$(command -v colcon) || fail "distro mode needs colcon (apt install python3-colcon-common-extensions)"
fi
(
  cd "$WS"
  "$COLCON" build --symlink-install --base-paths "${BASE_PATHS[@]}" \
    --event-handlers console_direct- \
    --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$PY" -DCMAKE_BUILD_TYPE=Release
) >>"$LOG" 2>&1 || fail "colcon build failed"

# ---- 5. the console commands of setup.py (sray-train, sray-eval, ...) on the venv's PATH -------------
"$PY" "$ROOT/scripts/write_commands.py" "$VENV/bin" >>"$LOG" 2>&1 || fail "writing the console commands failed"

fingerprint > "$STAMP"
say "done ($MODE mode). Use: source scripts/env.sh"
