-- Connection grants are signed tokens now (hpcdesk-server's grants.rs): nothing to store, and
-- a session's grants end with it. The table of the stored ones goes; links issued before this
-- release stop opening (their open viewers stay).
DROP TABLE grants;
