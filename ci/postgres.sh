#!/usr/bin/env bash
# A real PostgreSQL for the store's tests, all state under $HPCDESK_PG_DIR (default
# /var/tmp/hpcdesk-pg), listening on 127.0.0.1:$HPCDESK_PG_PORT (default 55433) with password
# authentication. Needs root and the Debian package postgresql (any version).
#   ci/postgres.sh up      start (idempotent); prints HPCDESK_TEST_POSTGRES_URL=…
#   ci/postgres.sh down    stop
set -euo pipefail

DIR=${HPCDESK_PG_DIR:-/var/tmp/hpcdesk-pg}
PORT=${HPCDESK_PG_PORT:-55433}
PASSWORD=hpcdesk-ci
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
. "$(dirname "$0")/lib.sh"

up() {
  safe_dir "$DIR" 0700 postgres
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    # initdb refuses to run as root.
    printf '%s\n' "$PASSWORD" >"$DIR/pwfile"
    chown postgres: "$DIR/pwfile"
    runuser -u postgres -- "$PGBIN/initdb" -D "$DIR/data" -U postgres --pwfile="$DIR/pwfile" \
      -A scram-sha-256 --no-sync -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log"
    rm -f "$DIR/pwfile"
  fi
  if ! runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -o \
      "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
      start >/dev/null
  fi
  echo "HPCDESK_TEST_POSTGRES_URL=postgres://postgres:$PASSWORD@127.0.0.1:$PORT/postgres"
}

down() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
