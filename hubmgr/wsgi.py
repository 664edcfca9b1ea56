import os

from django.core.wsgi import get_wsgi_application

from hubmgr import datadir

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hubmgr.settings")
datadir.prepare()
application = get_wsgi_application()
