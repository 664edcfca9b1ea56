from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from hubmgr.web.models import ApiToken


class Command(BaseCommand):
    help = "Create a personal API token for USERNAME and print it once."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}. Create one with "
                               "`python manage.py createsuperuser`.")
        _, token = ApiToken.issue(user)
        self.stdout.write(token)
        self.stderr.write("Keep this token: it is not stored and cannot be shown again. "
                          "Send it as 'Authorization: Bearer <token>'.")
