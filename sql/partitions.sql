-- Daily partitions of tickers and funding_rates: what exists, and upkeep by hand (the
-- maintain-database flow does the same on its schedule).
--   psql "$URL" -v days_ahead=7 -v retention_days=90 -f sql/partitions.sql
\set ON_ERROR_STOP on

-- Every partition with its bounds, size and rows (estimate).
SELECT p.relname AS parent, c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bounds,
       pg_size_pretty(pg_total_relation_size(c.oid)) AS size, c.reltuples::bigint AS rows_estimate,
       i.inhdetachpending AS detach_pending
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname IN ('tickers', 'funding_rates')
ORDER BY p.relname, c.relname;

-- Create the partitions of today and the next :days_ahead days (names of those created).
SELECT perpflow_ensure_partition(t, d::date) AS created
FROM unnest(ARRAY['tickers', 'funding_rates']) AS t,
     generate_series(current_date, current_date + :days_ahead, interval '1 day') AS d;

-- The statements that would retire partitions wholly older than :retention_days (run them
-- one by one outside a transaction; DETACH ... CONCURRENTLY does not block inserts).
SELECT format('ALTER TABLE %I DETACH PARTITION %I CONCURRENTLY; DROP TABLE %I;',
              p.relname, c.relname, c.relname) AS retire
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname IN ('tickers', 'funding_rates')
  AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= (now() - make_interval(days => :retention_days))
ORDER BY c.relname;
