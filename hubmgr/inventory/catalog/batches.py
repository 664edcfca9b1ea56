"""Deleting many rows without holding the database for long."""

BATCH_SIZE = 2000


def delete_in_batches(queryset, batch_size=BATCH_SIZE) -> int:
    """Delete the rows of ``queryset``, oldest ids first, ``batch_size`` ids per DELETE, and
    return how many went. Each batch is its own short statement, so a million rows never hold
    SQLite's write lock (or PostgreSQL row locks) for long, and an interrupted run keeps what
    it deleted. Rows deleted by cascade are not counted."""
    model, total = queryset.model, 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return total
        model.objects.filter(pk__in=ids).delete()
        total += len(ids)
