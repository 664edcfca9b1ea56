import json

from django.core.management.base import BaseCommand, CommandError

from hubmgr.deletion import reclaim
from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.errors import RegistryError
from hubmgr.units import human_size, plural


class Command(BaseCommand):
    help = ("Ask the registry now whether its garbage collector has run since deletions "
            "finished (run it after `garbage-collect`); what it freed moves from pending to "
            "reclaimed. Celery beat does the same every HUBMGR_RECLAIM_CHECK_MINUTES.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, **options):
        registry = default_registry()
        try:
            client = client_for(registry)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        try:
            result = reclaim.check(client, registry)
        finally:
            client.close()
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            if result["reclaimed"]:
                self.stdout.write(
                    f"The garbage collector has run: reclaimed "
                    f"{human_size(result['reclaimed_bytes'])} ({result['reclaimed_bytes']} "
                    f"bytes) of {plural(len(result['reclaimed']), 'deletion job')}.")
            self.stdout.write(
                f"Deleted, waiting for garbage collection: {human_size(result['pending_bytes'])}"
                f" ({result['pending_bytes']} bytes) in {plural(result['pending'], 'job')}.")
        if result["error"]:
            raise CommandError(f"Could not check: {result['error']}")
