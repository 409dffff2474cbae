#!/usr/bin/env bash
# The main job: set everything up, then boot the embedded demo guest (real SeaBIOS on the
# hypervisor simulator, through the daemon). Arguments are passed to `devmodel` instead.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
if [ $# -eq 0 ]; then set -- boot; fi
exec .venv/bin/devmodel "$@"
