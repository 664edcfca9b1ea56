"""Who did something, for the records that say so: audits, deletion jobs, policy runs. Below
every layer."""


def acting(user):
    """``user``, or None when nobody is signed in (a command, a worker, an anonymous request):
    a record never points at the anonymous user."""
    return user if user is not None and user.is_authenticated else None
