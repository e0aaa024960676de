#!/usr/bin/env bash
# Prints the path of a working Python >= 3.12 (pyenv shims often fail for non-default versions).
set -u
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
for v in python3.13 python3.12 python3; do command -v "$v" >/dev/null 2>&1 && candidates+=("$(command -v "$v")"); done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for p in "$root"/versions/3.1[2-9]*/bin/python3.1[2-9]; do [ -x "$p" ] && candidates+=("$p"); done
fi
for p in /usr/bin/python3.1[2-9] /usr/local/bin/python3.1[2-9]; do [ -x "$p" ] && candidates+=("$p"); done
for p in "${candidates[@]}"; do
  if "$p" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
    echo "$p"; exit 0
  fi
done
echo "error: no working Python >= 3.12 found (rasterio>=1.5 with GDAL's GTI driver needs cp312+)." >&2
echo "Install one, e.g. 'apt-get install python3.12 python3.12-venv' or 'pyenv install 3.12', or set PYTHON=/path/to/python3.12." >&2
exit 1
