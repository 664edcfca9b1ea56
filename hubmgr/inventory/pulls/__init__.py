"""Push and pull times, which a registry does not keep: its notifications (queued by
envelopes.py, applied by notifications.py), access logs imported afterwards (accesslog.py,
pullimport.py), the tags' history that resolves old pulls by tag (taghistory.py), and what
all of it lets hubmgr say about Stale (coverage.py)."""
