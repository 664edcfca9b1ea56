import sys
from collections import Counter

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from hubmgr.deletion import actions, jobs
from hubmgr.deletion.graph import selection_digests
from hubmgr.deletion.models import JobStatus
from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED
from hubmgr.inventory.catalog.queries import FILTERS
from hubmgr.inventory.models import Repository
from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.errors import RegistryError
from hubmgr.units import counted, human_size, plural


class Command(BaseCommand):
    help = ("Delete images and indexes from REPOSITORY: print the plan, then (without --dry-run) "
            "run it here and wait, with a progress bar.")

    def add_arguments(self, parser):
        parser.add_argument("repository")
        parser.add_argument("--digest", action="append", default=[], help="a digest to delete "
                            "(repeat for several)")
        parser.add_argument("--filter", choices=sorted(FILTERS), help="every item of this kind")
        parser.add_argument("--search", default="", help="every item whose tag contains this, "
                            "or whose digest starts with it")
        parser.add_argument("--dry-run", action="store_true", help="print the plan only")
        parser.add_argument("--keep-attached", action="store_true", help="keep the "
                            "signatures, attestations, SBOMs and referrers attached to what "
                            "goes (they stay, orphaned) instead of deleting them with it")

    def handle(self, repository, digest, filter, search, dry_run, keep_attached, **options):
        repo = Repository.objects.filter(registry=default_registry(), name=repository).first()
        if repo is None:
            raise CommandError(f"No repository {repository!r} in the inventory. Run "
                               "`python manage.py sync` first, or check the name.")
        if not (digest or filter or search):
            raise CommandError("Name what to delete: --digest, --filter or --search.")
        digests = digest or selection_digests(repo, all_matching=True, search=search,
                                              filter=filter or "")
        plan = actions.make_plan(repo, digests, keep_attached)
        for node, reason in plan.going:
            label = ", ".join(node.tags) or "untagged"
            why = reason.replace("_", " ")
            if reason == ATTACHED:
                why = f"attached to {node.subject[:19]}"
            self.stdout.write(f"delete  {node.digest}  {node.label or node.kind:5}  "
                              f"{human_size(node.size):>9}  {label}  ({why})")
        for key, reason in plan.kept:
            self.stdout.write(f"keep    {key[1]}  {reason}")
        reasons = Counter(reason for _, reason in plan.going)
        going = counted(reasons[SELECTED], reasons[CHILD], reasons[ATTACHED])
        self.stdout.write(f"To delete: {going}; {len(plan.kept)} kept; storage to "
                          f"reclaim: {human_size(plan.reclaim_bytes)} ({plan.reclaim_bytes} "
                          "bytes) once the registry's garbage collector runs.")
        if plan.orphaned:
            one = len(plan.orphaned) == 1
            self.stdout.write(f"{plural(len(plan.orphaned), 'attached artifact')} "
                              f"{'stays' if one else 'stay'} and will be orphaned: what "
                              f"{'it is' if one else 'they are'} attached to goes.")
        if dry_run or not plan.going:
            return
        try:
            client = client_for(repo.registry)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        job = jobs.create_job(repo, actions.plan_data(plan, freed=True))
        self.stdout.write(f"Deletion job {job.pk} started.")
        bar = tqdm(total=len(plan.going), unit="item", file=sys.stderr)

        def show(job):
            bar.n = job.items.finished().count()
            bar.refresh()

        try:
            status = jobs.process_job(job.pk, client, wait=True, on_progress=show)
        finally:
            bar.close()
            client.close()
        data = actions.progress(job)
        self.stdout.write(f"Job {job.pk} {status}: {data['done']} deleted, "
                          f"{data['counts'].get('skipped', 0)} kept, "
                          f"{data['counts'].get('failed', 0)} failed.")
        for problem in data["problems"]:
            self.stdout.write(f"  {problem['status']}: {problem['digest']}: {problem['error']}")
        if status == JobStatus.FAILED:
            raise CommandError("No item could be deleted.")
