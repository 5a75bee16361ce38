#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium drives the browser test; Playwright's own browser download is not used.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends chromium
fi

python3 -m pip install -r requirements-test.txt
# A missing browser fails the browser test here instead of skipping it.
export TSDPO_REQUIRE_BROWSER=1
python3 -m pytest "$@"
