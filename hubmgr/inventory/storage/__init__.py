"""Storage over time and the bookkeeping kept bounded: the overview's daily figures
(snapshots.py) and the pruning of old events, sync runs and snapshots (retention.py)."""
