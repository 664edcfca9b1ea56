"""The catalog: what the registry stores, as rows (written only through store.py) and read back
for the pages and the API (queries.py for a repository's table, listing.py for the
repositories page), with the conditions several readers share (conditions.py)."""
