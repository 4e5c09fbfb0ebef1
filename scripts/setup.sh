#!/usr/bin/env bash
# Idempotent set-up of a development / CI machine for sray_ros.
#
#   bash scripts/setup.sh                          # venv + dependencies + colcon build (seconds when nothing changed)
#   SRAY_ROS_DISTRO=jazzy bash scripts/setup.sh    # the same against ROS 2 Jazzy wheels (pip mode)
#
# Two modes, chosen automatically:
# * distro mode: a ROS 2 distro is sourced (ROS_DISTRO set and its rclpy importable). The venv sees the
#   distro's packages (--system-site-packages); scripts/missing_requirements.py picks the lines of
#   requirements/{python,test}.txt whose module does not import, and only those are pip-installed, with
#   the distro's numpy pinned (never replaced). torch must already import (the user's build for the GPU).
#   The package is built with the distro's colcon.
# * pip mode (machines without ROS, e.g. CI): ROS 2 comes from PyPI wheels, Kilted by default
#   (requirements/ros-wheels.txt, exact versions in constraints.txt) or Jazzy with SRAY_ROS_DISTRO=jazzy
#   (ros-wheels-jazzy.txt, constraints-jazzy.txt: numpy 1.26 and OpenCV 4.6 as on Ubuntu 24.04). The
#   wheels' CMake files are repointed at the venv's Python, and the one-message tf2_msgs stand-in in
#   ros_shims/ is built because no wheel carries tf2_msgs.
# Result: a venv (one per distro) and the colcon workspace .ros_ws/ (.ros_ws-<distro>/ for other distros
# than Kilted) with build/, install/, log/. scripts/env.sh (same SRAY_ROS_DISTRO) sources both.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON_BIN=${SRAY_PYTHON:-python3}

MODE=pip
if [[ -n "${ROS_DISTRO:-}" ]] && "$PYTHON_BIN" -c 'import rclpy' >/dev/null 2>&1; then
  MODE=distro
fi
# Pip mode owns its venv: a PYTHONPATH left from elsewhere would let pip "upgrade" (uninstall) packages of
# another environment and CMake pick up a foreign numpy.
[[ $MODE == pip ]] && unset PYTHONPATH
# shellcheck source=scripts/paths.sh
source "$ROOT/scripts/paths.sh" || exit 1   # SRAY_ROS_DISTRO (checked), VENV, WS
DISTRO=$SRAY_ROS_DISTRO
mkdir -p "$WS"
LOG=$WS/setup.log

say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s (log: %s)\n' "$*" "$LOG" >&2; tail -n 30 "$LOG" >&2 || true; exit 1; }

# Everything that decides what gets installed or built. File *contents* of the Python sources are not
# part of it: the build is a symlink install, so edits are live; new or removed files need a rebuild.
fingerprint() {
  {
    echo "mode=$MODE distro=$DISTRO ros_distro=${ROS_DISTRO:-} venv=$VENV root=$ROOT"
    cat "$ROOT"/requirements/*.txt "$ROOT"/scripts/{setup.sh,paths.sh,missing_requirements.py,commands.txt}
    cat "$ROOT/package.xml" "$ROOT/CMakeLists.txt" "$ROOT/setup.py" "$ROOT"/msg/* "$ROOT"/ros_shims/tf2_msgs/msg/*
    (cd "$ROOT" && find sray_ros launch config models scripts -type f ! -path '*__pycache__*' | LC_ALL=C sort)
  } | sha256sum | cut -d' ' -f1
}
STAMP=$WS/.setup-stamp
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(fingerprint)" && -x "$VENV/bin/python" \
      && -f "$WS/install/setup.bash" ]]; then
  say "up to date ($MODE mode, $DISTRO); nothing to do"
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
# .venv: a convenience link to the default (Kilted) set-up's venv.
if [[ $WS == "$ROOT/.ros_ws" ]] && ! [[ -e "$ROOT/.venv" || -L "$ROOT/.venv" ]]; then ln -s "$VENV" "$ROOT/.venv"; fi
PY=$VENV/bin/python
"$PY" -m pip install -q --disable-pip-version-check -U 'pip>=24' >>"$LOG" 2>&1 || fail "pip upgrade failed"

# ---- 2. dependencies (pip skips what is already satisfied) ----------------------------------------
REQ_FILES=("$ROOT/requirements/python.txt" "$ROOT/requirements/test.txt")
if [[ $MODE == pip ]]; then
  # Exact versions: the lower bounds of requirements/*.txt under the distro's constraints file.
  if [[ $DISTRO == kilted ]]; then
    REQS=(-r "$ROOT/requirements/ros-wheels.txt") CONSTRAINTS=$ROOT/requirements/constraints.txt
  else
    REQS=(-r "$ROOT/requirements/ros-wheels-$DISTRO.txt") CONSTRAINTS=$ROOT/requirements/constraints-$DISTRO.txt
  fi
  for f in "${REQ_FILES[@]}"; do REQS+=(-r "$f"); done
  say "installing pinned dependencies (pip mode, ROS 2 $DISTRO wheels)"
  "$PY" -m pip install -q --disable-pip-version-check "${REQS[@]}" -c "$CONSTRAINTS" \
    >>"$LOG" 2>&1 || fail "pip install failed"
else
  # Only what the distro lacks, never its numpy (pinned to the installed version while pip runs).
  DISTRO_PINS=$WS/distro-constraints.txt
  status=0
  MISSING=$("$PY" "$ROOT/scripts/missing_requirements.py" "${REQ_FILES[@]}" --constraints-out "$DISTRO_PINS" \
    2>>"$LOG") || status=$?
  ((status == 0)) || fail "$(tail -n 1 "$LOG")"
  if [[ -n $MISSING ]]; then
    say "installing what the distro lacks: $(echo $MISSING)"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --disable-pip-version-check $MISSING -c "$DISTRO_PINS" >>"$LOG" 2>&1 \
      || fail "pip install failed (the distro's numpy is pinned; see the log for the conflict)"
  else
    say "the distro provides every Python dependency"
  fi
fi

# ---- 3. pip mode: repoint the wheels' CMake files at this venv's Python ---------------------------
if [[ $MODE == pip ]]; then
  PY_INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NP_INC=$(realpath "$("$PY" -c 'import numpy; print(numpy.get_include())')")
  { grep -rl '/opt/python/cp3' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_\?core/include#$NP_INC#g" \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$PY_INC#g"
fi

# ---- 4. colcon build ----------------------------------------------------------------------------
say "building sray_ros with colcon (ROS 2 $DISTRO)"
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
    --cmake-args -DBUILD_TESTING=ON "-DPython3_EXECUTABLE=$PY" -DCMAKE_BUILD_TYPE=Release
) >>"$LOG" 2>&1 || fail "colcon build failed"

# ---- 5. the commands of scripts/commands.txt (sray-train, sray-eval, ...) on the venv's PATH ----------
"$PY" "$ROOT/scripts/write_commands.py" "$VENV/bin" >>"$LOG" 2>&1 || fail "writing the console commands failed"

fingerprint > "$STAMP"
if [[ $DISTRO == kilted ]]; then
  say "done ($MODE mode, $DISTRO). Use: source scripts/env.sh"
else
  say "done ($MODE mode, $DISTRO). Use: SRAY_ROS_DISTRO=$DISTRO source scripts/env.sh"
fi
