-- Table and index bloat: exact-ish with pgstattuple (sql/extensions.sql), an estimate otherwise.
--   psql "$URL" -f sql/bloat.sql
\set ON_ERROR_STOP on
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple') AS have_pgstattuple \gset

\if :have_pgstattuple
-- Tables: free and dead space from the visibility map (pgstattuple_approx, cheap).
SELECT c.relname AS table, pg_size_pretty(pg_relation_size(c.oid)) AS size,
       round((a.approx_free_percent + a.dead_tuple_percent)::numeric, 1) AS bloat_pct,
       a.dead_tuple_count
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     LATERAL pgstattuple_approx(c.oid::regclass) AS a
WHERE n.nspname = current_schema() AND c.relkind = 'r'
ORDER BY pg_relation_size(c.oid) DESC;
-- Btree indexes: leaf density against the default fillfactor 90.
SELECT c.relname AS index, pg_size_pretty(pg_relation_size(c.oid)) AS size,
       s.avg_leaf_density, round(greatest(0, 100 - s.avg_leaf_density / 0.9)::numeric, 1) AS bloat_pct
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace, LATERAL pgstatindex(c.oid::regclass) AS s
WHERE n.nspname = current_schema() AND am.amname = 'btree' AND i.indisvalid AND c.relkind = 'i'
ORDER BY pg_relation_size(c.oid) DESC;
\else
-- Tables: dead-tuple share from the statistics collector.
SELECT relname AS table, pg_size_pretty(pg_relation_size(relid)) AS size, n_live_tup, n_dead_tup,
       round(100.0 * n_dead_tup / nullif(n_live_tup + n_dead_tup, 0), 1) AS dead_pct
FROM pg_stat_user_tables WHERE schemaname = current_schema()
ORDER BY pg_relation_size(relid) DESC;
-- Btree indexes: actual size against the size expected from row count and column widths.
SELECT c.relname AS index, pg_size_pretty(pg_relation_size(c.oid)) AS size,
       round(greatest(0, 100 * (1 - (1 + ceil(t.reltuples * (w.key_width + 12) / ((8192 - 40) * 0.9))) * 8192
             / nullif(pg_relation_size(c.oid), 0)))::numeric, 1) AS bloat_pct_estimate
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace,
LATERAL (SELECT sum(st.avg_width) AS key_width FROM pg_attribute a
         JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = t.relname AND st.attname = a.attname
         WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) AS w
WHERE n.nspname = current_schema() AND am.amname = 'btree' AND c.relkind = 'i' AND t.reltuples >= 0
ORDER BY pg_relation_size(c.oid) DESC;
\endif

-- Invalid indexes (a failed CREATE/REINDEX ... CONCURRENTLY leaves them; *_ccnew/*_ccold are
-- dropped by the maintain-database flow).
SELECT c.relname AS invalid_index, pg_size_pretty(pg_relation_size(c.oid)) AS size
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid;
