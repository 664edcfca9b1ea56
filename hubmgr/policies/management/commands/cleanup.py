import json
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from hubmgr.policies import reports, runs
from hubmgr.policies.models import CleanupPolicy, PolicyRun
from hubmgr.units import human_size, plural


class Command(BaseCommand):
    help = ("Run cleanup policies (all of them, or POLICY) and print each report: per "
            "repository what goes and the rule that selected it, what is kept and why, and "
            "the storage freed. A policy in delete mode starts a deletion job per repository "
            "(the workers run them); --dry-run deletes nothing.")

    def add_arguments(self, parser):
        parser.add_argument("policy", nargs="?", help="a policy's name (default: every policy)")
        parser.add_argument("--dry-run", action="store_true",
                            help="report what would be removed; delete nothing")
        parser.add_argument("--json", action="store_true", help="print the full reports as JSON")
        parser.add_argument("--confirm-brake", type=int, metavar="RUN",
                            help="delete what the brake stopped in run RUN (a run in delete "
                                 "mode, while its plan is as fresh as a preview)")

    def handle(self, policy, dry_run, json, confirm_brake, **options):
        if confirm_brake is not None:
            return self.confirm(confirm_brake)
        if policy:
            policies = list(CleanupPolicy.objects.filter(name=policy))
            if not policies:
                names = ", ".join(CleanupPolicy.objects.values_list("name", flat=True))
                raise CommandError(f"No cleanup policy named {policy!r}. "
                                   + (f"Policies: {names}." if names else "There are none."))
        else:
            policies = list(CleanupPolicy.objects.all())
            if not policies:
                self.stdout.write("There are no cleanup policies. Create one in the admin "
                                  "(/admin/policies/cleanuppolicy/).")
                return
        reports, failed = [], []
        for p in policies:
            try:
                run = runs.record_run(p, delete=not dry_run, progress=lambda repos, name=p.name:
                                      tqdm(repos, desc=name, unit="repo", file=sys.stderr,
                                           disable=None))
            except runs.AlreadyRunning as exc:
                failed.append(p.name)
                self.stderr.write(str(exc))
                continue
            if run.error:
                failed.append(p.name)
                self.stderr.write(f"Policy {p.name}: the dry run failed: {run.error}")
                continue
            reports.append(run.report)
            if not json:
                self.print_report(run)
        if json:
            self.stdout.write(_dumps(reports if not policy else reports[0] if reports else {}))
        if failed:
            raise CommandError(f"Failed: {', '.join(failed)}.")

    def confirm(self, run_id):
        run = PolicyRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"No policy run {run_id}.")
        try:
            job_ids = runs.confirm_brake(run)
        except runs.CannotConfirm as exc:
            raise CommandError(str(exc)) from None
        for job_id in job_ids:
            self.stdout.write(f"Deletion job {job_id} started (see the Deletion jobs page).")

    def print_report(self, run):
        w = self.stdout.write
        report = reports.counted_apart(run.report)
        totals = report["totals"]
        how = "nothing is deleted" if run.dry_run else "deleting"
        w(f"Policy {report['policy']} ({how}; mode: {report['mode']})")
        for kind in ("remove", "keep"):
            for rule, text in report["rules"][kind].items():
                w(f"  {kind} rule {rule}: {text}")
        for repo in report["repositories"]:
            going = repo["going"]
            size = sum(item["size"] for item in going)
            what = reports.going_text(repo, of=repo["items"], clause=True)
            w(f"\n{repo['repository']}: {what} "
              f"{'held back by the brake' if repo['brake'] else 'to delete'} "
              f"({repo['selected']} selected), {len(repo['protected'])} protected, "
              f"{len(repo['kept'])} kept by the planner; {human_size(repo['reclaim_bytes'])} "
              f"({repo['reclaim_bytes']} bytes) to reclaim, items {human_size(size)}")
            if repo["brake"]:
                w(f"  STOPPED BY THE BRAKE: {repo['brake']}. Nothing here is deleted.")
            if repo.get("job"):
                w(f"  Deletion job {repo['job']} started (see the Deletion jobs page).")
            for item in going:
                why = (f"rule {item['rule']}" if item["rule"]
                       else reports.CASCADED.get(item["reason"], item["reason"]))
                w(f"  delete   {item['digest']}  {item['type']:5}  "
                  f"{', '.join(item['tags']) or 'untagged'}  ({why})")
            for item in repo["protected"]:
                w(f"  protect  {item['digest']}  {', '.join(item['tags']) or 'untagged'}  "
                  f"(rule {item['rule']}, kept by {', '.join(item['keep'])})")
            for item in repo["kept"]:
                w(f"  keep     {item['digest']}  {item['reason']}")
        w(f"\n{report['note']}")
        total = reports.going_text(totals, clause=True)
        w(f"Total: {total} to delete in {totals['planned'] - totals['braked']} "
          f"of {plural(totals['repositories'], 'repository', 'repositories')} covered; "
          f"{human_size(totals['reclaim_bytes'])} ({totals['reclaim_bytes']} bytes) to reclaim "
          "once the registry's garbage collector runs.")
        if totals["braked"]:
            held = reports.going_text(reports.braked_counts(report))
            stopped = plural(totals["braked"], "repository", "repositories")
            w(f"The brake stopped {stopped}, holding back {held} "
              f"({human_size(totals['braked_reclaim_bytes'])}, "
              f"{totals['braked_reclaim_bytes']} bytes)."
              + (f" To delete them anyway: cleanup --confirm-brake {run.pk}" if not run.dry_run
                 else ""))
        w("")


def _dumps(data):
    return json.dumps(data, indent=2, sort_keys=True)
