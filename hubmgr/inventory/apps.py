from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "hubmgr.inventory"
    label = "inventory"
