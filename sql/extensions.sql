-- Optional extensions the maintenance flow and the queries in sql/ use when present. As a
-- superuser, in the market database: psql "$ADMIN_URL" -f sql/extensions.sql
-- pg_stat_statements also needs shared_preload_libraries = 'pg_stat_statements' (and a restart).
CREATE EXTENSION IF NOT EXISTS pgstattuple;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
