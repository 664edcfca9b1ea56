"""Login throttling (django-axes): whose address a failure counts against, and the page a
throttled login answers."""

from datetime import timedelta

from django.conf import settings
from django.shortcuts import render
from django.utils import timezone


def client_address(request):
    """REMOTE_ADDR, or, when HUBMGR_CLIENT_IP_HEADER names a header that the proxy in front
    sets, the last address in it: the one that proxy added (a client may send the header
    too, so earlier addresses prove nothing)."""
    if settings.CLIENT_IP_HEADER:
        last = request.headers.get(settings.CLIENT_IP_HEADER, "").split(",")[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR")


def locked_out(request, original_response=None, credentials=None):
    """The login page, saying when to try again. Every attempt during the cool-off starts it
    again, so the wait counts from now."""
    wait = settings.AXES_COOLOFF_TIME
    minutes = max(1, round(wait / timedelta(minutes=1)))
    return render(request, "registration/login.html", {
        "locked_out_minutes": minutes, "locked_out_until": timezone.now() + wait,
        "next": request.POST.get("next", request.GET.get("next", "")),
    }, status=429)
