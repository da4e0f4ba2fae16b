#!/bin/sh
# The part of the official postgres image's entrypoint that deploy/compose.yaml relies on: a first
# start makes the cluster with POSTGRES_USER (password POSTGRES_PASSWORD, scram-sha-256 over TCP)
# and the database POSTGRES_DB; every start then runs postgres in the foreground.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (postgres.env)}"
user=${POSTGRES_USER:-postgres}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password"
  initdb --username="$user" --pwfile="$password" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$password"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "${POSTGRES_DB:-$user}" != postgres ]; then
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "${POSTGRES_DB:-$user}" OWNER "$user";
SQL
  fi
fi
exec postgres -c listen_addresses='*' "$@"
