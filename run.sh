#!/usr/bin/env bash
# The main job: set everything up, then run devmodel (default: the demo on an embedded
# default). Any arguments are passed to the `devmodel` command instead.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
if [ $# -eq 0 ]; then set -- demo; fi
exec .venv/bin/devmodel "$@"
