#!/usr/bin/env bash
# README's main job: set up (idempotent), then replay the sample sequence through the node with the shipped
# default model, render the held-out views before and after a short fine-tuning, and write out/demo/.
#   bash scripts/demo.sh [--out DIR] [--width W --height H] [--fine-tune-steps N] ...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$SRAY_WS"   # not the repo root: it would shadow the installed sray_ros package
exec python -m sray_ros.demo "$@"
