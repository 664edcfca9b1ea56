from django.apps import AppConfig


class DeletionConfig(AppConfig):
    name = "hubmgr.deletion"
    label = "deletion"
