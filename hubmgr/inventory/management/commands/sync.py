import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.inventory.storage import snapshots
from hubmgr.inventory.sync.runs import sync_registry
from hubmgr.registry.errors import RegistryError
from hubmgr.units import plural


class Command(BaseCommand):
    help = "Read the registry's repositories, tags and manifests into the inventory."

    def add_arguments(self, parser):
        parser.add_argument("--repository", help="sync only this repository")
        parser.add_argument("--concurrency", type=int, help="parallel requests (default: "
                            "HUBMGR_SYNC_CONCURRENCY)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument("--queue", action="store_true", help="queue one task per "
                            "repository for the Celery workers instead of syncing here")

    def handle(self, repository=None, concurrency=None, no_progress=False, queue=False,
               **options):
        registry = default_registry()
        if queue:
            return self._queue(registry)
        try:
            client = client_for(registry)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        bar = tqdm(total=0, unit="tag", desc="sync", disable=no_progress, file=sys.stderr)
        try:
            run = sync_registry(registry, client, repository, concurrency, progress=bar)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
            client.close()
        self.stdout.write(
            f"Synced {plural(run.repositories, 'repository', 'repositories')}, "
            f"{plural(run.tags, 'tag')}; read {plural(run.manifests_fetched, 'manifest')}; "
            f"removed {run.removed:,}.")
        for problem in run.problems[:20]:
            self.stdout.write(f"  problem: {problem['reference']}: {problem['error']}")
        if len(run.problems) > 20:
            self.stdout.write(f"  … and {plural(len(run.problems) - 20, 'more problem')}")
        if repository is None and not run.error:
            snapshots.take(registry)  # the overview's figures follow a sync of everything

    def _queue(self, registry):
        from ...tasks import QueueUnavailable, fan_out

        try:
            run = fan_out(registry)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        except QueueUnavailable as exc:
            raise CommandError(f"The task queue (Redis) did not answer: {exc}") from None
        if run is None:
            raise CommandError("A sync of this registry is still running; its repositories "
                               "are queued or being synced.")
        self.stdout.write(f"Queued {plural(run.remaining, 'repository', 'repositories')} "
                          f"for the workers (sync run "
                          f"{run.pk}).")
