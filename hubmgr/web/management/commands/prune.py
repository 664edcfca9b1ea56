from django.core.management.base import BaseCommand

from hubmgr.deletion import retention as deletion_retention
from hubmgr.inventory.storage import retention as inventory_retention


class Command(BaseCommand):
    help = ("Delete notification event ids, sync runs, repositories' storage snapshots and "
            "finished deletion jobs older than their retention (Celery beat does this hourly).")

    def handle(self, **options):
        counts = {**inventory_retention.prune(), **deletion_retention.prune()}
        return "Pruned " + ", ".join(f"{n} {what}" for what, n in counts.items()) + "."
