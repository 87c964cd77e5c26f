-- Roles of the market database (PostgreSQL). Run as a superuser once the schema is at head
-- (python -m perpflow.store), in the market database:
--   psql "postgresql://postgres@HOST:5432/perpflow" -v collector=perpflow_collector \
--        -v collector_password="$COLLECTOR_PASSWORD" -v maintainer=perpflow_maintainer \
--        -v maintainer_password="$MAINTAINER_PASSWORD" -v reader=perpflow_reader \
--        -v reader_password="$READER_PASSWORD" -f sql/roles.sql
-- Idempotent. One role per job (prefect.yaml names each job's perpflow-market-database block):
-- * collector (collect-tickers, sweep-funding-rates): reads and adds market data, upserts the
--   instrument and ledger bookkeeping rows, and may open only today's and tomorrow's (UTC)
--   partitions through perpflow_ensure_partition (revision 0012);
-- * reader (report-health, check-data-quality, certify-completeness, run-benchmarks, exports):
--   reads every table; writes only its own results (health snapshots, quality results, the
--   gaps check-data-quality finds, benchmark results, the completeness certificate);
-- * maintainer: owns the schema: it runs the migrations and the maintain-database flow.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'maintainer', :'maintainer_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'maintainer') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'collector', :'collector_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'collector') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'reader', :'reader_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader') \gexec

-- Statistics views, pgstattuple and pg_stat_statements for the maintainer's measurements.
GRANT pg_monitor TO :"maintainer";
GRANT CONNECT, TEMPORARY ON DATABASE :"DBNAME" TO :"maintainer", :"collector", :"reader";
SELECT format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', current_schema(), :'maintainer') \gexec
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), :'collector') \gexec
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), :'reader') \gexec

-- The maintainer owns every table (partitions included; indexes and owned sequences follow)
-- and the partition function, which runs with its owner's rights for the collector.
SELECT format('ALTER TABLE %I OWNER TO %I', c.relname, :'maintainer')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \gexec
ALTER FUNCTION perpflow_ensure_partition(text, date) OWNER TO :"maintainer";
REVOKE ALL ON FUNCTION perpflow_ensure_partition(text, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION perpflow_ensure_partition(text, date) TO :"collector";

-- The collector: read and insert market data; no UPDATE, DELETE, TRUNCATE or DDL on it.
SELECT format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', current_schema(), :'collector') \gexec
GRANT SELECT, INSERT ON tickers, funding_rates, funding_history, quarantine TO :"collector";
GRANT SELECT, INSERT, UPDATE ON instruments, collection_ledger TO :"collector";
-- the sweep resolves gaps and records the history windows a venue no longer serves
GRANT SELECT, INSERT, UPDATE ON funding_gaps TO :"collector";
-- the sweep rewrites an instrument's coverage and interval timeline (bookkeeping, not market data)
GRANT SELECT, INSERT, DELETE ON funding_coverage, funding_intervals TO :"collector";
-- each collection step reads and moves its venue's circuit breaker (perpflow.circuit)
GRANT SELECT, INSERT, UPDATE ON venue_circuits TO :"collector";
GRANT SELECT ON alembic_version TO :"collector";
GRANT USAGE ON SEQUENCE quarantine_id_seq TO :"collector";

-- The reader: SELECT on every table (partitions included), the server statistics report-health
-- shows, and writes of its own results only; no UPDATE or DELETE of market data, no DDL.
GRANT pg_monitor TO :"reader";
SELECT format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', current_schema(), :'reader') \gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', current_schema(), :'reader') \gexec
-- report-health and check-data-quality replace their run's rows (DELETE + INSERT)
GRANT INSERT, DELETE ON health_snapshots, quality_results TO :"reader";
-- check-data-quality records the funding-history gaps it finds (the sweep fills them)
GRANT INSERT ON funding_gaps TO :"reader";
GRANT INSERT ON benchmark_results TO :"reader";
-- certify-completeness upserts the day's certificate
GRANT INSERT, UPDATE ON completeness TO :"reader";
