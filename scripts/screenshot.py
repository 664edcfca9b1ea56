"""docs/screenshot.png: the Image Management table of the demo registry's library/alpine.

Starts its own `manage.py launch` (a private Redis, the demo registry with its sample images,
runserver and a worker) on a free port with its data in HUBMGR_SHOT_DIR (default /tmp/h-shot),
logs in as the admin it created, takes the picture with Debian's Chromium through Playwright,
and stops everything it started. Run: .venv/bin/python scripts/screenshot.py
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshot.png"
DATA = Path(os.environ.get("HUBMGR_SHOT_DIR", "/tmp/h-shot"))
REPOSITORY = "library/alpine"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(addr):
    """`manage.py launch` in a session of its own, with nothing of this shell's hubmgr setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMGR_")}
    env["HUBMGR_DATA_DIR"] = str(DATA)
    log = open(DATA / "launch.log", "w")
    proc = subprocess.Popen([sys.executable, "manage.py", "launch", "--addr", addr], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while "hubmgr is running" not in (DATA / "launch.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            sys.exit(f"launch did not come up; see {DATA / 'launch.log'}")
        time.sleep(1)
    return proc


def stop(proc):
    """SIGTERM lets launch stop what it started; its process group goes if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def shoot(url, password):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(20_000)
            page.goto(f"{url}/login/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{url}/repositories/{REPOSITORY}")
            page.wait_for_selector("#image-table tbody tr")
            # The tagged multi-arch index, open on its images.
            expand = page.locator("#image-table tr", has_text="latest").locator(
                "button[aria-expanded=false]").first
            if expand.count():
                expand.click()
                page.wait_for_timeout(800)
            page.screenshot(path=str(OUT))
        finally:
            browser.close()


def main():
    DATA.mkdir(parents=True, exist_ok=True)
    addr = f"127.0.0.1:{free_port()}"
    proc = start(addr)
    try:
        shoot(f"http://{addr}", (DATA / "admin_password").read_text().strip())
    finally:
        stop(proc)
    print(f"{OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
