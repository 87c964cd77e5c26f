-- The statements that cost most time, from pg_stat_statements when it is loaded
-- (sql/extensions.sql and shared_preload_libraries); says so otherwise.
--   psql "$URL" -v limit=20 -f sql/top_statements.sql
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
       AND current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%' AS have_pss \gset
\if :have_pss
SELECT round(total_exec_time::numeric, 1) AS total_ms, calls, round(mean_exec_time::numeric, 2) AS mean_ms,
       rows, round(100.0 * shared_blks_hit / nullif(shared_blks_hit + shared_blks_read, 0), 1) AS hit_pct,
       left(regexp_replace(query, '\s+', ' ', 'g'), 120) AS query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC LIMIT :limit;
\else
\echo 'pg_stat_statements is not loaded: see sql/extensions.sql'
\endif
