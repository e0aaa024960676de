#!/usr/bin/env bash
# Everything a fresh Debian machine needs for the demo and the tests, idempotent and quiet when done:
# the project venv (.venv, Python >= 3.12, exact pins from requirements/main.txt) and the
# project installed into it. The STAC API's own venv and PostgreSQL are set up by stac_server.sh.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MOSAIC_VENV:-$REPO_ROOT/.venv}
STAMP=$VENV/.installed-$(cat "$REPO_ROOT/requirements/main.txt" "$REPO_ROOT/pyproject.toml" | sha256sum | cut -c1-16)

if [ ! -f "$STAMP" ]; then
  PY=$("$REPO_ROOT/scripts/find_python.sh")
  echo "setup: creating $VENV with $PY ($("$PY" --version))"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$REPO_ROOT/requirements/main.txt"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e "$REPO_ROOT"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
"$VENV/bin/python" -c 'from mosaic_assets.engine.gdal_env import require_gti_driver as r; print("setup: GDAL", r(), "with GTI")'
