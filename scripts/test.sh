#!/usr/bin/env bash
# Set everything up (venv, packages, PostgreSQL on 127.0.0.1:5432) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/postgres.sh
exec .venv/bin/python -m pytest "$@"
