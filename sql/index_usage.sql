-- Index usage since the statistics were last reset: scans, size, and the ones never used.
--   psql "$URL" -f sql/index_usage.sql
SELECT s.relname AS table, s.indexrelname AS index, s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,
       pg_size_pretty(pg_relation_size(s.indexrelid)) AS size,
       (s.idx_scan = 0 AND NOT i.indisprimary AND NOT i.indisunique) AS unused
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE s.schemaname = current_schema()
ORDER BY s.idx_scan, pg_relation_size(s.indexrelid) DESC;

-- Tables read mostly by sequential scans (with their size).
SELECT relname AS table, seq_scan, seq_tup_read, idx_scan, pg_size_pretty(pg_relation_size(relid)) AS size
FROM pg_stat_user_tables WHERE schemaname = current_schema()
ORDER BY seq_tup_read DESC LIMIT 20;
