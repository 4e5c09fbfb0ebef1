#!/usr/bin/env bash
# Install the synthetic generator's dependencies (requirements/generator.txt): Debian packages
# (sweethome3d-furniture, Mesa EGL) and the pinned pip packages into a virtual environment.
#   scripts/install_generator_deps.sh [VENV]     (VENV defaults to .venv; created if missing)
# Idempotent: when everything is already in place it only checks (about a second) and exits.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$REPO/requirements/generator.txt"
VENV="${1:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PY="$VENV/bin/python"

# --- Debian packages -------------------------------------------------------------------------------
mapfile -t APT_SPECS < <(sed -n 's/^# apt: *//p' "$REQ")
missing=()
for spec in "${APT_SPECS[@]}"; do
  pkg="${spec%%=*}"
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$spec")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "[generator deps] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    echo "[generator deps] WARNING: pinned versions unavailable, installing the distribution's current ones" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]%%=*}"
  fi
fi

# --- pip packages ----------------------------------------------------------------------------------
if [ ! -x "$PY" ]; then
  echo "[generator deps] creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
if ! "$PY" - "$REQ" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PYEOF
then
  echo "[generator deps] pip install -r $REQ into $VENV"
  "$PY" -m pip install -q -r "$REQ"
fi

# --- smoke test: an offscreen EGL context on the CPU ----------------------------------------------
PYOPENGL_PLATFORM=egl "$PY" -c "import pyrender; r = pyrender.OffscreenRenderer(8, 8); r.delete()" \
  || { echo "[generator deps] pyrender cannot open an EGL context (Mesa EGL missing?)" >&2; exit 1; }
echo "[generator deps] ok ($VENV)"
