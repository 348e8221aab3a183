#!/bin/sh
# Run once by the postgres image on an empty data volume (docker-compose.yml mounts it into
# /docker-entrypoint-initdb.d): the role Temporal's server and schema job connect as. It may
# create databases (temporal-sql-tool create-database) but is not a superuser. The password
# comes from the container's environment, passed as a psql variable (quoted by psql).
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$TEMPORAL_DB_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'pw';
SQL
