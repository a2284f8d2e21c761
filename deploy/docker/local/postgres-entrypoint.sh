#!/bin/sh
# Starts PostgreSQL, first creating the cluster when its data folder is empty: the superuser
# $POSTGRES_USER with the password $POSTGRES_PASSWORD, and the databases named in
# $POSTGRES_DATABASES (space separated), owned by that user. Runs as the postgres user.
set -eu
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
    initdb -D "$data" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >/dev/null
    : > /tmp/pwfile
    printf "listen_addresses = '*'\n" >> "$data/postgresql.conf"
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >> "$data/pg_hba.conf"
    pg_ctl -D "$data" -o "-c listen_addresses=''" -w start >/dev/null
    for database in ${POSTGRES_DATABASES:-}; do
        psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d postgres \
            -c "CREATE DATABASE \"$database\" OWNER \"$POSTGRES_USER\""
    done
    pg_ctl -D "$data" -m fast -w stop >/dev/null
fi
exec postgres -D "$data" "$@"
