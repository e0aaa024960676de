#!/usr/bin/env bash
# Local STAC API (stac-fastapi-pgstac on PostgreSQL + PostGIS + pgstac) for the demo and the tests.
#
#   scripts/stac_server.sh start   # create venv / database if missing, start both, print the URL last
#   scripts/stac_server.sh stop    # stop uvicorn and postgres (data kept)
#   scripts/stac_server.sh status  # exit 0 if the API answers
#   scripts/stac_server.sh reset   # stop and delete the data dir
#
# Env: STAC_PORT (8082), STAC_PG_PORT (5439), STAC_DATA_DIR (<repo>/.local/stac),
#      STAC_VENV (<repo>/.venv-stac), STAC_PG_PASSWORD (stac), STAC_PG_VERSION (auto, prefers 15),
#      STAC_START_TIMEOUT (60), PYTHON (passed to scripts/find_python.sh).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAC_PORT=${STAC_PORT:-8082}
STAC_PG_PORT=${STAC_PG_PORT:-5439}
STAC_DATA_DIR=${STAC_DATA_DIR:-$REPO_ROOT/.local/stac}
STAC_VENV=${STAC_VENV:-$REPO_ROOT/.venv-stac}
STAC_PG_PASSWORD=${STAC_PG_PASSWORD:-stac}
STAC_START_TIMEOUT=${STAC_START_TIMEOUT:-60}
REQUIREMENTS=$REPO_ROOT/requirements/stac-server.txt
INIT_SQL=$REPO_ROOT/scripts/stac_server_init.sql
PG_DB=stac
PG_SUPERUSER=postgres
URL="http://127.0.0.1:$STAC_PORT"

STAC_DATA_DIR=$(realpath -m "$STAC_DATA_DIR")   # absolute: postgres and uvicorn run from other cwds
PGDATA_DIR=$STAC_DATA_DIR/pgdata
PG_LOG=$STAC_DATA_DIR/postgres.log
API_PID=$STAC_DATA_DIR/uvicorn.pid
API_LOG=$STAC_DATA_DIR/uvicorn.log
# Unix socket paths are limited to 107 bytes (incl. "/.s.PGSQL.NNNN"); fall back to /tmp for deep clones.
PG_SOCK=$STAC_DATA_DIR/run
if [ ${#PG_SOCK} -gt 90 ]; then
  PG_SOCK=/tmp/stac-pg-$(printf '%s' "$STAC_DATA_DIR" | cksum | cut -d' ' -f1)
fi

# libpq env for pypgstac and stac-fastapi-pgstac (its PostgresSettings reads PGHOST/PGPORT/...).
PG_ENV=(PGHOST=127.0.0.1 "PGPORT=$STAC_PG_PORT" "PGUSER=$PG_SUPERUSER" "PGPASSWORD=$STAC_PG_PASSWORD" "PGDATABASE=$PG_DB")

# Caller's libpq settings (PGHOST, PGSERVICE, ...) must not redirect our psql/pypgstac/API connections.
for v in $(compgen -e | grep '^PG' || true); do unset "$v"; done

log() { echo "stac_server: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# initdb/postgres refuse to run as root: run them as the postgres user (from a dir it can enter).
# fd 9 (the lock) is closed so a long-lived postmaster does not keep holding it.
as_pg() {
  if is_root; then (cd "$STAC_DATA_DIR" && runuser -u postgres -- "$@" 9>&-); else (cd "$STAC_DATA_DIR" && "$@" 9>&-); fi
}

# ---------------------------------------------------------------- postgres binaries
pg_version_ok() {  # $1 = major version: server binaries and the postgis extension both present
  [ -x "/usr/lib/postgresql/$1/bin/initdb" ] && [ -f "/usr/share/postgresql/$1/extension/postgis.control" ]
}

ensure_pg_packages() {
  local v
  if [ -n "${STAC_PG_VERSION:-}" ]; then
    PG_VERSION=$STAC_PG_VERSION
  elif [ -f "$PGDATA_DIR/PG_VERSION" ]; then
    PG_VERSION=$(cat "$PGDATA_DIR/PG_VERSION")   # an existing cluster needs its own major version
  else
    PG_VERSION=
    for v in 15 16 17 18; do pg_version_ok "$v" && { PG_VERSION=$v; break; }; done
  fi
  if [ -z "$PG_VERSION" ] || ! pg_version_ok "$PG_VERSION"; then
    is_root || die "PostgreSQL ${PG_VERSION:-15} + PostGIS 3 missing; run: apt-get install postgresql-${PG_VERSION:-15} postgresql-${PG_VERSION:-15}-postgis-3"
    apt-get update -qq >&2
    if [ -z "$PG_VERSION" ]; then
      # 15 is what Debian 12 ships; a newer Debian only has its own major version.
      for v in 15 17 16 18; do
        apt-cache show "postgresql-$v-postgis-3" >/dev/null 2>&1 && { PG_VERSION=$v; break; }
      done
      [ -n "$PG_VERSION" ] || die "no postgresql-NN-postgis-3 package found by apt"
    fi
    log "installing postgresql-$PG_VERSION and postgresql-$PG_VERSION-postgis-3 (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      "postgresql-$PG_VERSION" "postgresql-$PG_VERSION-postgis-3" >&2
    pg_version_ok "$PG_VERSION" || die "PostgreSQL $PG_VERSION / PostGIS still missing after apt-get install"
  fi
  PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
  if is_root && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  fi
}

# ---------------------------------------------------------------- python venv
ensure_venv() {
  local stamp=$STAC_VENV/.stac-server-requirements want py
  want=$(cksum < "$REQUIREMENTS")
  # Reuse the venv when its interpreter still runs and it was built from this exact requirements file.
  if [ -x "$STAC_VENV/bin/python" ] && "$STAC_VENV/bin/python" -c '' 2>/dev/null \
     && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  py=$("$REPO_ROOT/scripts/find_python.sh")
  if ! { [ -x "$STAC_VENV/bin/python" ] && "$STAC_VENV/bin/python" -c '' 2>/dev/null; }; then
    log "creating venv $STAC_VENV with $py"
    rm -rf "$STAC_VENV"
    "$py" -m venv "$STAC_VENV"
  fi
  log "installing requirements/stac-server.txt into $STAC_VENV"
  "$STAC_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQUIREMENTS" >&2
  echo "$want" > "$stamp"
}

# ---------------------------------------------------------------- postgres cluster
psql_su() {  # superuser psql over the unix socket (local auth is trust)
  as_pg "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$STAC_PG_PORT" -U "$PG_SUPERUSER" "$@"
}

is_zombie() {  # state field of /proc/PID/stat, after the "(comm)" field
  local st; st=$(sed 's/.*) //' "/proc/${1:-x}/stat" 2>/dev/null) || return 1
  [ "${st%% *}" = Z ]
}

pg_pid() { head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null; }
# Our postmaster runs: the pid in postmaster.pid is a process started with our -D (a pid reused by
# another process after a reboot does not count).
pg_running() { local pid; pid=$(pg_pid) && [ -n "$pid" ] && grep -qaF -- "$PGDATA_DIR" "/proc/$pid/cmdline" 2>/dev/null; }

prepare_dirs() {
  mkdir -p "$PGDATA_DIR" "$PG_SOCK"
  touch "$PG_LOG"
  if is_root; then
    chown postgres:postgres "$PGDATA_DIR" "$PG_SOCK" "$PG_LOG"
    # postgres must be able to traverse every parent of the data dir (e.g. a clone under /root).
    local d=$STAC_DATA_DIR
    while [ "$d" != / ]; do
      runuser -u postgres -- test -x "$d" 2>/dev/null || { log "chmod o+x $d (postgres must reach $STAC_DATA_DIR)"; chmod o+x "$d"; }
      d=$(dirname "$d")
    done
  fi
  chmod 700 "$PGDATA_DIR"
}

init_cluster() {
  [ -f "$PGDATA_DIR/PG_VERSION" ] && return 0
  log "initdb $PGDATA_DIR (PostgreSQL $PG_VERSION)"
  local pwfile=$STAC_DATA_DIR/.pwfile
  printf '%s\n' "$STAC_PG_PASSWORD" > "$pwfile"
  if is_root; then chown postgres "$pwfile"; fi
  chmod 600 "$pwfile"
  # trust on the private unix socket (admin), password on TCP 127.0.0.1 (pypgstac, API).
  as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U "$PG_SUPERUSER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$PG_LOG" 2>&1 \
    || { rm -f "$pwfile"; tail -n 30 "$PG_LOG" >&2; die "initdb failed"; }
  rm -f "$pwfile"
  echo "include_if_exists = 'stac_local.conf'" >> "$PGDATA_DIR/postgresql.conf"
}

start_postgres() {
  pg_running && return 0
  # postgres itself ignores a postmaster.pid whose pid is dead (and then checks for orphaned
  # backends); but after a reboot that pid may belong to an unrelated live process, which would make
  # it refuse to start: only then remove the file.
  local pid; pid=$(pg_pid) || true
  # A killed postmaster can linger as a zombie until init reaps it; postgres counts a zombie as alive.
  for _ in $(seq 100); do is_zombie "$pid" || break; sleep 0.1; done
  if [ -n "$pid" ] && [ -e "/proc/$pid" ] && ! is_zombie "$pid" && ! pg_running; then
    log "removing stale postmaster.pid (pid $pid is not our postgres)"
    rm -f "$PGDATA_DIR/postmaster.pid"
  fi
  # Rewritten on each start so STAC_PG_PORT / socket dir changes apply to an existing cluster.
  cat > "$PGDATA_DIR/stac_local.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $STAC_PG_PORT
unix_socket_directories = '$PG_SOCK'
synchronous_commit = off
EOF
  if is_root; then chown postgres:postgres "$PGDATA_DIR/stac_local.conf"; fi
  log "starting postgres on 127.0.0.1:$STAC_PG_PORT"
  as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA_DIR" -l "$PG_LOG" -w -t "$STAC_START_TIMEOUT" >/dev/null \
    || { tail -n 30 "$PG_LOG" >&2; die "postgres did not start (log: $PG_LOG)"; }
}

stop_postgres() {
  [ -d "$PGDATA_DIR" ] && [ -f "$PGDATA_DIR/PG_VERSION" ] || return 0
  PG_VERSION=${STAC_PG_VERSION:-$(cat "$PGDATA_DIR/PG_VERSION")}
  PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
  [ -x "$PG_BIN/pg_ctl" ] || return 0
  if pg_running; then
    log "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 >/dev/null
  fi
}

setup_database() {
  if [ -z "$(psql_su -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ]; then
    psql_su -d postgres -c "CREATE DATABASE $PG_DB"
  fi
  # Keep the TCP password in step with STAC_PG_PASSWORD.
  psql_su -d postgres -v pw="$STAC_PG_PASSWORD" >/dev/null <<'EOF'
ALTER ROLE postgres PASSWORD :'pw';
EOF
  # pypgstac migrate only when the installed pgstac differs from the venv's pypgstac (saves ~seconds).
  local have want
  have=
  if [ -n "$(psql_su -d "$PG_DB" -c "SELECT to_regproc('pgstac.get_version')")" ]; then
    have=$(psql_su -d "$PG_DB" -c "SELECT pgstac.get_version()")
  fi
  want=$("$STAC_VENV/bin/python" -c 'import pypgstac; print(pypgstac.__version__)')
  if [ "$have" != "$want" ]; then
    log "pypgstac migrate ($have -> $want)"
    env "${PG_ENV[@]}" "$STAC_VENV/bin/pypgstac" migrate >&2
  fi
  psql_su -d "$PG_DB" < "$INIT_SQL" >/dev/null
}


# ---------------------------------------------------------------- API (uvicorn)
http_ok() {  # GET $URL$1 returns 200
  if command -v curl >/dev/null 2>&1; then
    [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$URL$1" 2>/dev/null || true)" = 200 ]
  else
    local py=$STAC_VENV/bin/python
    [ -x "$py" ] || py=$("$REPO_ROOT/scripts/find_python.sh" 2>/dev/null) || return 1
    "$py" -c 'import sys, urllib.request as u; sys.exit(0 if u.urlopen(sys.argv[1], timeout=5).status == 200 else 1)' \
      "$URL$1" >/dev/null 2>&1
  fi
}

# GET / answers even with the database down; /_mgmt/health is 503 then.
api_ready() { http_ok / && http_ok /_mgmt/health; }

# Our uvicorn is alive: checked by its cmdline, so a pid reused by another process after a reboot
# does not count, nor does an unreaped zombie (empty cmdline).
api_alive() { [ -n "${1:-}" ] && grep -qa 'stac_fastapi.pgstac.app' "/proc/$1/cmdline" 2>/dev/null; }

api_pid() {  # pid from the pid file, if that process is our live uvicorn
  local pid
  [ -f "$API_PID" ] || return 1
  pid=$(cat "$API_PID" 2>/dev/null) || return 1
  api_alive "$pid" || return 1
  echo "$pid"
}

wait_api() {
  local pid=$1 deadline=$((SECONDS + STAC_START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    api_ready && return 0
    api_alive "$pid" || { tail -n 40 "$API_LOG" >&2; die "uvicorn exited (log: $API_LOG)"; }
    sleep 0.3
  done
  tail -n 40 "$API_LOG" >&2
  die "API not answering at $URL/ after ${STAC_START_TIMEOUT}s (log: $API_LOG)"
}

start_api() {
  local pid
  if pid=$(api_pid); then wait_api "$pid"; return 0; fi
  rm -f "$API_PID"
  http_ok / && die "something else already answers at $URL (set STAC_PORT)"
  log "starting stac-fastapi-pgstac on $URL"
  # cwd = data dir so pydantic-settings does not pick up some .env; setsid detaches it from the
  # caller's process group; the inner shell writes its own pid, which exec hands to uvicorn.
  # The subshell execs too, so no process is left holding fd 9 (the lock) or the caller's stdout.
  # shellcheck disable=SC2016  # $$/$0/$@ are meant for the inner shell
  ( cd "$STAC_DATA_DIR" || exit 1
    exec env "${PG_ENV[@]}" ENABLE_TRANSACTIONS_EXTENSIONS=TRUE \
      STAC_FASTAPI_TITLE="mosaic_assets local STAC" STAC_FASTAPI_DESCRIPTION="Local pgstac for demo/tests" \
      STAC_FASTAPI_VERSION=7.2.0 STAC_FASTAPI_LANDING_ID=mosaic-assets-local \
      setsid bash -c 'echo $$ > "$0"; exec "$@"' "$API_PID" \
      "$STAC_VENV/bin/uvicorn" stac_fastapi.pgstac.app:create_app --factory \
      --host 127.0.0.1 --port "$STAC_PORT"
  ) >>"$API_LOG" 2>&1 </dev/null 9>&- &
  for _ in $(seq 50); do [ -s "$API_PID" ] && break; sleep 0.1; done
  pid=$(cat "$API_PID" 2>/dev/null) || die "uvicorn did not start (log: $API_LOG)"
  wait_api "$pid"
}

stop_api() {
  local pid
  if pid=$(api_pid); then
    log "stopping uvicorn (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do api_alive "$pid" || break; sleep 0.1; done
    if api_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$API_PID"
}

# ---------------------------------------------------------------- commands
lock() {  # serialise concurrent start/stop (e.g. parallel test workers)
  mkdir -p "$STAC_DATA_DIR"
  exec 9>"$STAC_DATA_DIR/.lock"
  flock 9
}

cmd_start() {
  lock
  if api_pid >/dev/null && pg_running && api_ready; then echo "$URL"; return 0; fi
  ensure_pg_packages
  ensure_venv
  prepare_dirs
  init_cluster
  # An API left running without its database holds dead pool connections: restart it too.
  if ! pg_running; then stop_api; fi
  start_postgres
  setup_database
  start_api
  echo "$URL"
}

cmd_stop() {
  [ -d "$STAC_DATA_DIR" ] || return 0
  lock
  stop_api
  stop_postgres
}

cmd_status() {
  local pid
  if api_ready; then
    if pid=$(api_pid); then echo "running: $URL (uvicorn pid $pid)"; else echo "answering: $URL (not started by this script)"; fi
    return 0
  fi
  if http_ok /; then echo "degraded: $URL answers but its database does not (/_mgmt/health)"; else echo "not running: $URL"; fi
  return 1
}

cmd_reset() {
  cmd_stop
  [ -d "$STAC_DATA_DIR" ] || return 0
  log "deleting $STAC_DATA_DIR"
  rm -rf "$STAC_DATA_DIR"
  case $PG_SOCK in /tmp/stac-pg-*) rm -rf "$PG_SOCK" ;; esac
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
