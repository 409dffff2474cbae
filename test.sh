#!/usr/bin/env bash
# The test suite: set everything up, lint, then run every test (unit, protocol, end-to-end).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
.venv/bin/ruff check devmodel tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
