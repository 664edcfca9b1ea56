"""Registry to catalog: a sync run (runs.py) reads the catalog, tags and manifests through the
crawler (crawl.py) and writes what it finds through the catalog's store."""
