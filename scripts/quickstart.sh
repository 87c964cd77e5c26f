#!/usr/bin/env bash
# Set everything up and run the main job once, offline: the local exchange emulator serves three
# venues on 127.0.0.1, both collection flows run against it into the embedded SQLite store.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m deployments.quickstart "$@"
