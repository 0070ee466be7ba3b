-- 010_schema_privileges: only the migrations' owner creates objects in schema public.
-- The children's roles get their rights table by table from inboxlens/db/roles.py at every
-- start; none may create a table, view or function (one named like ours, earlier on a
-- search path, would take over the queries of whoever calls it). PostgreSQL 15 and later
-- no longer grant CREATE on public to PUBLIC; a configured server from before, or one
-- upgraded with pg_upgrade, still does: take it away here.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
