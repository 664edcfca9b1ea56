import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from hubmgr.deletion import actions, control
from hubmgr.deletion.models import DeletionJob
from hubmgr.units import plural


class Command(BaseCommand):
    help = ("Control a deletion job: `show JOB`, `cancel JOB` (what waits is cancelled, a "
            "DELETE under way ends as it ends) or `retry JOB` (a new job of a finished job's "
            "failed items, planned and checked again). --user names who does it, for the "
            "audit.")

    def add_arguments(self, parser):
        parser.add_argument("action", choices=("show", "cancel", "retry"))
        parser.add_argument("job", type=int)
        parser.add_argument("--user", help="the username the job records as having cancelled "
                            "or retried it (must hold the delete permission)")
        parser.add_argument("--json", dest="as_json", action="store_true",
                            help="print the job as the API answers it, without its items")

    def handle(self, action, job, user, as_json, **options):
        found = DeletionJob.objects.select_related("created_by", "cancelled_by").filter(
            pk=job).first()
        if found is None:
            raise CommandError(f"There is no deletion job {job}.")
        who = _user(user) if action != "show" else None
        try:
            if action == "cancel":
                found = control.cancel(found, who)
            elif action == "retry":
                new = control.retry(found, who)
                self.stdout.write(f"Deletion job {found.pk}'s failed items are retried as job "
                                  f"{new.pk} ({plural(new.items.count(), 'item')}, "
                                  f"{len(new.kept)} kept); "
                                  "a worker runs it.")
                found = new
        except control.Refused as exc:
            raise CommandError(str(exc)) from None
        self._show(found, as_json)

    def _show(self, job, as_json):
        data = {**actions.job_data(job), **control.control_data(job)}
        if as_json:
            data.pop("items")
            self.stdout.write(json.dumps(data, indent=2))
            return
        counts = actions.progress(job)["counts"]
        line = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        self.stdout.write(f"Deletion job {job.pk} of {job.repository_name}: {job.status} "
                          f"({line or 'no items'}).")
        if job.cancelled_at:
            self.stdout.write(f"Cancelled by {data['cancelled_by'] or '—'} at "
                              f"{job.cancelled_at:%Y-%m-%d %H:%M:%S} UTC.")
        if job.retry_of_id:
            self.stdout.write(f"Retries the failed items of job {job.retry_of_id}.")
        if job.retried_as_id:
            self.stdout.write(f"Its failed items were retried as job {job.retried_as_id}.")


def _user(username):
    if not username:
        return None
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"There is no active user {username!r}.")
    if not user.has_perm("deletion.delete_images"):
        raise CommandError(f"{username} may not delete images (the delete permission), so "
                           "may not cancel or retry a deletion either.")
    return user
