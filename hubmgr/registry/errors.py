"""One error family for everything the registry client can run into.

Each error carries a sentence a person can act on (``str(err)``), the URL involved and, where
the registry answered, its HTTP status and distribution error code.
"""


class RegistryError(Exception):
    """Base class. ``transient`` says whether trying again later may succeed."""

    transient = False

    def __init__(self, message, *, url="", status=None, code=""):
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status
        self.code = code

    def __str__(self):
        return self.message


class RegistryUnavailable(RegistryError):
    """No answer: connection refused, DNS failure, timeout."""

    transient = True


class RegistryAuthError(RegistryError):
    """The registry refused our credentials (401/403) or the token server did."""


class RegistryNotFound(RegistryError):
    """404: the repository, manifest or blob does not exist (code says which)."""


class RegistryUnsupported(RegistryError):
    """The registry does not support the operation (e.g. deletion disabled)."""


class RegistryResponseError(RegistryError):
    """Any other error answer. 5xx and 429 are transient."""

    def __init__(self, message, **kwargs):
        super().__init__(message, **kwargs)
        self.transient = self.status is not None and (self.status >= 500 or self.status == 429)


class ManifestInvalid(RegistryError):
    """The registry answered, but the manifest is not one we can read."""


class InvalidReference(RegistryError):
    """hubmgr refused to build a URL from a name, tag or digest outside the distribution
    grammar (it never sends one to the registry)."""
