"""Chromium (Debian's /usr/bin/chromium driven by Playwright): where it is, and a logged-in page."""

import os
import shutil
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.sync_api import expect

from tests.support.helpers import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTPUT = ROOT / "test-output"  # screenshots, for a person to look at
expect.set_options(timeout=15_000)
# Playwright's sync API runs an event loop in this thread; the Django calls here are sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def login(browser, live_server, username, permissions=(), viewport=(1280, 900), **options):
    user = get_user_model().objects.create_user(username, password=f"pw-{username}-123")
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                  **options)
    page = context.new_page()
    page.csp_violations = []  # the Content-Security-Policy must never block our own pages
    page.on("console", lambda message: "Content Security Policy" in message.text and
            page.csp_violations.append(f"{message.text} at {message.location}"))
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/repositories/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/repositories/")
    return page


def wait_for_rows(page, count):
    # Not page.wait_for_function: Playwright compiles its predicate in the page, which the
    # Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    expect(page.locator("tbody.item")).to_have_count(count)
