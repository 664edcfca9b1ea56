import hashlib
import secrets

from django.conf import settings
from django.db import models

PREFIX = "hubmgr_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    """A personal API token. Only its hash is stored; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16)  # the first characters, to tell tokens apart
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    @classmethod
    def issue(cls, user):
        token = PREFIX + secrets.token_urlsafe(32)
        row = cls.objects.create(user=user, key_hash=hash_token(token),
                                 hint=token[:len(PREFIX) + 4])
        return row, token

    def __str__(self):
        return f"{self.hint}… ({self.user})"
