#!/bin/sh
# First start: initdb into the (empty) volume at $PGDATA, then create the role and database $EM_DB_USER /
# $EM_DB_NAME in single-user mode (no server listening meanwhile, so the healthcheck stays unhealthy until the
# real server below accepts connections). Every start: exec postgres listening on all interfaces.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=trust >/dev/null
    # the generated host lines are loopback only; add the server's own subnets (the compose network)
    printf 'host all all samenet trust\n' >> "$PGDATA/pg_hba.conf"
    postgres --single -D "$PGDATA" -c jit=off postgres >/dev/null <<SQL
CREATE ROLE "$EM_DB_USER" LOGIN;
CREATE DATABASE "$EM_DB_NAME" OWNER "$EM_DB_USER";
SQL
    echo "postgres-entrypoint: initialised $PGDATA with database $EM_DB_NAME owned by $EM_DB_USER"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
