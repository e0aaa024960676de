#!/usr/bin/env bash
# A local HTTP server for signed, expiring hrefs: Debian's nginx with `secure_link`, serving one folder
# on 127.0.0.1 only. A request needs ?md5=<base64url md5 of "<expires><uri> <secret>">&expires=<epoch>
# (what mosaic_assets_tests/signer.py issues): missing or wrong -> 403, expired -> 410. Static files
# honour Range requests (206), so GDAL's /vsicurl/ reads it like a real object store.
#
#   scripts/signed_http_server.sh start   # install nginx if missing, start (idempotent), print the URL last
#   scripts/signed_http_server.sh stop    # stop it (files kept)
#   scripts/signed_http_server.sh status  # exit 0 if our nginx answers
#
# Env: SIGNED_HTTP_PORT (8099), SIGNED_HTTP_ROOT (the folder served; required by start),
#      SIGNED_HTTP_DATA_DIR (<repo>/.local/signed-http-<port>: config, pid, logs, temp),
#      MOSAIC_TEST_SIGNER_SECRET (required by start; letters, digits and . _ ~ - only, 8+),
#      SIGNED_HTTP_START_TIMEOUT (20 s).
#
# nginx runs as our own process (its own prefix, config, pid and logs in the data dir), never as the
# system service. As root its workers run as root too: they serve the caller's folder (often under a
# 0700 pytest tmp dir) with the caller's rights. The access log records $uri, never the query string,
# so no token is written to disk.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIGNED_HTTP_PORT=${SIGNED_HTTP_PORT:-8099}
SIGNED_HTTP_DATA_DIR=$(realpath -m "${SIGNED_HTTP_DATA_DIR:-$REPO_ROOT/.local/signed-http-$SIGNED_HTTP_PORT}")
SIGNED_HTTP_START_TIMEOUT=${SIGNED_HTTP_START_TIMEOUT:-20}
URL="http://127.0.0.1:$SIGNED_HTTP_PORT"
CONF=$SIGNED_HTTP_DATA_DIR/nginx.conf
PID_FILE=$SIGNED_HTTP_DATA_DIR/nginx.pid
ERROR_LOG=$SIGNED_HTTP_DATA_DIR/error.log
HEALTH=/.signed-http-health   # answered without a token, so status/start can tell our server is up
NGINX=${NGINX:-/usr/sbin/nginx}

log() { echo "signed_http_server: $*" >&2; }
die() { log "error: $*"; exit 1; }

has_secure_link() { [ -x "$NGINX" ] && [[ $("$NGINX" -V 2>&1) == *--with-http_secure_link_module* ]]; }

ensure_nginx() {
  has_secure_link && return 0
  [ "$(id -u)" = 0 ] || die "nginx with secure_link missing; run: apt-get install --no-install-recommends nginx"
  # Debian 12: the binary package `nginx` is built --with-http_secure_link_module; nginx-light and
  # nginx-core are metapackages on top of it that only add dynamic modules we do not need.
  # The package's own service (port 80 on every interface) must not start: a temporary
  # policy-rc.d says so, unless the machine already has one.
  local policy=/usr/sbin/policy-rc.d ours=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
  fi
  log "installing nginx (apt-get)"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >&2 \
    || { [ -z "$ours" ] || rm -f "$policy"; die "apt-get install nginx failed"; }
  [ -z "$ours" ] || rm -f "$policy"
  # Nor at the next boot: we only ever run nginx with our own config.
  # (systemctl disable works without a running systemd: it only removes the unit's links.)
  if command -v systemctl >/dev/null; then
    systemctl disable nginx >/dev/null 2>&1 || true
  elif command -v update-rc.d >/dev/null; then
    update-rc.d nginx disable >/dev/null 2>&1 || true
  fi
  has_secure_link || die "$NGINX lacks --with-http_secure_link_module after apt-get install nginx"
}

check_inputs() {
  [ -n "${SIGNED_HTTP_ROOT:-}" ] || die "SIGNED_HTTP_ROOT (the folder to serve) is not set"
  [ -d "$SIGNED_HTTP_ROOT" ] || die "SIGNED_HTTP_ROOT=$SIGNED_HTTP_ROOT is not a folder"
  [[ ${MOSAIC_TEST_SIGNER_SECRET:-} =~ ^[A-Za-z0-9._~-]{8,}$ ]] \
    || die "MOSAIC_TEST_SIGNER_SECRET must be set: 8+ letters, digits or . _ ~ - (it goes into nginx.conf)"
  [[ $SIGNED_HTTP_PORT =~ ^[0-9]+$ ]] || die "SIGNED_HTTP_PORT=$SIGNED_HTTP_PORT is not a port number"
}

write_config() {  # to $1; umask 077: the file holds the secret
  local root user=
  root=$(realpath "$SIGNED_HTTP_ROOT")
  [ "$(id -u)" = 0 ] && user="user root root;"
  mkdir -p "$SIGNED_HTTP_DATA_DIR/tmp"
  ( umask 077; cat >"$1" <<EOF
# written by scripts/signed_http_server.sh; rewritten on each start
$user
daemon on;
master_process on;
worker_processes 1;
pid $PID_FILE;
error_log $ERROR_LOG warn;
events { worker_connections 256; }
http {
    types { image/tiff tif tiff; application/json json; text/plain txt; }
    default_type application/octet-stream;
    sendfile on;
    server_tokens off;
    log_format notoken '\$remote_addr [\$time_local] "\$request_method \$uri" \$status \$body_bytes_sent '
                       'range="\$http_range" link="\$secure_link"';
    access_log $SIGNED_HTTP_DATA_DIR/access.log notoken;
    client_body_temp_path $SIGNED_HTTP_DATA_DIR/tmp/body;
    proxy_temp_path $SIGNED_HTTP_DATA_DIR/tmp/proxy;
    fastcgi_temp_path $SIGNED_HTTP_DATA_DIR/tmp/fastcgi;
    uwsgi_temp_path $SIGNED_HTTP_DATA_DIR/tmp/uwsgi;
    scgi_temp_path $SIGNED_HTTP_DATA_DIR/tmp/scgi;
    server {
        listen 127.0.0.1:$SIGNED_HTTP_PORT;
        root $root;
        autoindex off;
        location = $HEALTH { access_log off; return 204; }
        location / {
            secure_link \$arg_md5,\$arg_expires;
            secure_link_md5 "\$secure_link_expires\$uri $MOSAIC_TEST_SIGNER_SECRET";
            if (\$secure_link = "") { return 403; }
            if (\$secure_link = "0") { return 410; }
        }
    }
}
EOF
  )
}

# Our nginx master runs: the pid file names a live process whose command line holds our config
# (a pid reused after a reboot does not count).
running_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && grep -qaF -- "$CONF" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

answers() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL$HEALTH" 2>/dev/null || true)" = 204 ]; }

stop_nginx() {
  local pid
  pid=$(running_pid) || { rm -f "$PID_FILE"; return 0; }
  log "stopping nginx (pid $pid)"
  kill -QUIT "$pid" 2>/dev/null || true   # graceful: finish requests in flight
  for _ in $(seq 100); do [ -e "/proc/$pid" ] && grep -qaF -- "$CONF" "/proc/$pid/cmdline" 2>/dev/null || break; sleep 0.1; done
  if running_pid >/dev/null; then kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$PID_FILE"
}

lock() {  # serialise concurrent start/stop (parallel test workers)
  mkdir -p "$SIGNED_HTTP_DATA_DIR"
  exec 9>"$SIGNED_HTTP_DATA_DIR/.lock"
  flock 9
}

cmd_start() {
  check_inputs
  lock
  ensure_nginx
  write_config "$CONF.new"
  if running_pid >/dev/null && cmp -s "$CONF.new" "$CONF" && answers; then
    rm -f "$CONF.new"; echo "$URL"; return 0
  fi
  stop_nginx   # running with another folder or secret: restart with the new config
  mv "$CONF.new" "$CONF"
  answers && die "something else already answers at $URL (set SIGNED_HTTP_PORT)"
  log "starting nginx on $URL serving $(realpath "$SIGNED_HTTP_ROOT")"
  # nginx forks once its socket is bound: a taken port or a bad config fails here, synchronously.
  # Its output goes to a file and fd 9 (the lock) is closed, so the daemon holds neither the
  # caller's pipes (a test capturing our output would wait forever) nor the lock.
  "$NGINX" -p "$SIGNED_HTTP_DATA_DIR/" -e "$ERROR_LOG" -c "$CONF" 9>&- </dev/null >>"$ERROR_LOG" 2>&1 \
    || { tail -n 20 "$ERROR_LOG" >&2; die "nginx did not start (log: $ERROR_LOG)"; }
  local deadline=$((SECONDS + SIGNED_HTTP_START_TIMEOUT))
  until answers; do
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$ERROR_LOG" >&2; die "nginx not answering at $URL (log: $ERROR_LOG)"; }
    sleep 0.1
  done
  echo "$URL"
}

cmd_stop() {
  [ -d "$SIGNED_HTTP_DATA_DIR" ] || return 0
  lock
  stop_nginx
}

cmd_status() {
  local pid
  if pid=$(running_pid) && answers; then echo "running: $URL (nginx pid $pid)"; return 0; fi
  echo "not running: $URL"
  return 1
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
