-- A login user in the read-only role tenure_analytics (migration 0011), for Grafana's
-- "Tenure analytics" datasource: created if missing, its password set (again), the role
-- granted. Run by a user with CREATEROLE, after the migrations, with psql 15 or later:
--
--   ANALYTICS_DB_USER=tenure_grafana ANALYTICS_DB_PASSWORD=... \
--     psql -v ON_ERROR_STOP=1 "$ADMIN_DATABASE_URL" -f deploy/postgres/analytics-login.sql
--
-- The name and password come from the environment, not the command line (which other
-- users of the machine can read). docker-compose.yml runs it as the one-shot
-- "analytics-login"; docs/operations.md, "The business dashboard".
\set ON_ERROR_STOP on
\getenv user ANALYTICS_DB_USER
\getenv password ANALYTICS_DB_PASSWORD
\if :{?user}
\if :{?password}
\else
DO $$ BEGIN RAISE EXCEPTION 'ANALYTICS_DB_PASSWORD is not set'; END $$;
\endif
\else
DO $$ BEGIN RAISE EXCEPTION 'ANALYTICS_DB_USER is not set'; END $$;
\endif
SELECT format('CREATE ROLE %I LOGIN', :'user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'user', :'password') \gexec
SELECT format('GRANT tenure_analytics TO %I', :'user') \gexec
