-- Usage ingest (SPEC §11) adds to the same minute rows once per batch: with
-- room left on their pages the new row versions stay there (HOT updates),
-- so no index entry is added per update and the table does not bloat
-- between vacuums. Applies to pages written from now on.
ALTER TABLE usage_minute SET (fillfactor = 50);
