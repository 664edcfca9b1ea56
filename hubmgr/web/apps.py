from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "hubmgr.web"
    label = "web"
