#!/usr/bin/env bash
# Installs the project with its test dependencies and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
python -m pytest "$@"
