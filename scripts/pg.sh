#!/usr/bin/env bash
# A private PostgreSQL for the tests: Debian's initdb into a temporary
# directory and pg_ctl on a free loopback port (unix socket in that
# directory), never a system service. As root it runs as the system user
# keygate-pg (made if missing), since initdb refuses root.
#
#   scripts/pg.sh while PID   start; print the URL on one line; stop and
#                             remove everything once process PID is gone
#                             (or on SIGTERM/SIGINT). The tests use this.
#   scripts/pg.sh run CMD...  start; run CMD with KEYGATE_TEST_POSTGRES set
#                             to the URL; stop and remove; exit as CMD did.
#   scripts/pg.sh bin         print the directory of initdb/pg_ctl (exit 1 if
#                             PostgreSQL is not installed).
#   scripts/pg.sh ensure      install Debian's postgresql package if initdb
#                             is missing (apt-get, as root), saying so.
#
# The URL names the `postgres` database of user keygate, with a random
# password (scram-sha-256 on TCP); tests CREATE DATABASE their own in it.
# fsync is off: the tests kill control planes, never this server.
set -euo pipefail

PG_USER=keygate-pg

pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
      echo "$dir"
      return 0
    fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"
    return 0
  fi
  echo "pg.sh: PostgreSQL not found (apt-get install -y postgresql, or scripts/setup.sh)" >&2
  return 1
}

# Runs a command as the server's owner.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a server in a new temporary directory; sets DIR, BIN, URL.
start() {
  BIN="$(pg_bin)"
  if [[ $(id -u) -eq 0 ]] && ! id "$PG_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  fi
  local parent="${TMPDIR:-/tmp}"
  # The server's owner must reach its directory: as root, under /tmp.
  [[ $(id -u) -eq 0 ]] && parent=/tmp
  DIR="$(mktemp -d "$parent/keygate-pg.XXXXXX")"
  [[ $(id -u) -eq 0 ]] && chown "$PG_USER" "$DIR"
  chmod 700 "$DIR"
  local password
  password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  as_owner sh -c "umask 077; echo '$password' > '$DIR/pwfile'"
  as_owner "$BIN/initdb" -D "$DIR/data" -U keygate --pwfile="$DIR/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    return 1
  }
  rm -f "$DIR/pwfile"
  local port attempt
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    if as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$DIR -c fsync=off -c max_connections=500" \
      start >/dev/null; then
      URL="postgres://keygate:$password@127.0.0.1:$port/postgres"
      return 0
    fi
  done
  cat "$DIR/server.log" >&2
  return 1
}

stop() {
  if [[ -n "${DIR:-}" && -d "$DIR" ]]; then
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
  fi
}

ensure() {
  if pg_bin >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "pg.sh: the PostgreSQL tests need initdb and pg_ctl: install PostgreSQL (Debian: apt-get install -y postgresql)" >&2
    return 1
  fi
  echo "keygate: installing PostgreSQL for the tests (apt-get install -y postgresql)" >&2
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  pg_bin >/dev/null
}

case "${1:-}" in
  bin)
    pg_bin
    ;;
  ensure)
    ensure
    ;;
  while)
    watched="${2:?usage: pg.sh while PID}"
    trap stop EXIT
    trap 'exit 0' TERM INT HUP
    start
    echo "$URL"
    # The caller may close its end of the pipe; keep going until it is gone.
    exec >/dev/null 2>&1
    while kill -0 "$watched" 2>/dev/null; do sleep 0.5; done
    ;;
  run)
    shift
    trap stop EXIT
    start
    KEYGATE_TEST_POSTGRES="$URL" "$@"
    ;;
  *)
    echo "usage: scripts/pg.sh while PID | run CMD... | bin | ensure" >&2
    exit 2
    ;;
esac
