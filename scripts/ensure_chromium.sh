#!/usr/bin/env bash
# Debian's headless Chromium for the UI test (no browser download of its own: that fails here).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version
