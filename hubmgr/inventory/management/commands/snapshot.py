from django.core.management.base import BaseCommand

from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.storage import snapshots
from hubmgr.units import plural


class Command(BaseCommand):
    help = ("Compute the overview's storage figures now, as today's snapshot (Celery beat does "
            "this when the inventory changed, at most every "
            "HUBMGR_SNAPSHOT_INTERVAL_MINUTES, and daily).")

    def handle(self, **options):
        row = snapshots.take(default_registry())
        stale = ("unknown (the observation window is too short)" if row.stale_bytes is None
                 else f"{plural(row.stale_items, 'item')}, {row.stale_bytes:,} bytes")
        self.stdout.write(
            f"Snapshot of {row.date}: {plural(row.items, 'item')}, {row.bytes:,} bytes in "
            f"distinct blobs; untagged {plural(row.untagged_items, 'item')}, "
            f"{row.untagged_bytes:,} bytes; "
            f"stale {stale}.")
