"""The data folder of a laptop install (`make run`): SQLite, the private Redis, the demo
registry and the laptop's secret key live there. The entry points (manage.py, the WSGI
application, the tests' setup) prepare it; importing the settings only reads it."""

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
KEY_FILE = "secret_key"


def path() -> Path:
    return Path(os.environ.get("HUBMGR_DATA_DIR", str(BASE_DIR / ".data")))


def secret_key(data: Path) -> str:
    """The laptop's key kept in ``data``; before an entry point made one, a random key for
    this process alone (nothing it signs outlives it)."""
    try:
        return (data / KEY_FILE).read_text().strip()
    except FileNotFoundError:
        return secrets.token_urlsafe(50)


def prepare():
    """Unless HUBMGR_SECRET_KEY (or HUBMGR_SECRET_KEY_FILE) is set: make the data folder and a
    random secret key in it, once, so that every process of a laptop install (the web server,
    the worker) signs with the same key. A team's deployment sets the key and is left alone."""
    if os.environ.get("HUBMGR_SECRET_KEY") or os.environ.get("HUBMGR_SECRET_KEY_FILE"):
        return
    data = path()
    data.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(data / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # (made earlier, or by a process starting beside this one)
        return
    with os.fdopen(fd, "w") as key:
        key.write(secrets.token_urlsafe(50))
