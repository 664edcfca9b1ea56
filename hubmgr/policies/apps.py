from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "hubmgr.policies"
    label = "policies"
