"""Admin views of the inventory: read-only, but for removing repositories the registry no
longer has, and the notification events hubmgr could not apply."""

from django.contrib import admin, messages

from hubmgr.registry.errors import RegistryError

from .catalog.store import forget_repositories
from .models import ProcessedEvent, Repository
from .registries import client_for


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the default delete lists every manifest first; see the action


@admin.register(Repository)
class RepositoryAdmin(ReadOnly):
    list_display = ("name", "item_count", "total_size", "last_synced_at")
    search_fields = ("name",)
    actions = ["forget"]

    @admin.action(description="Remove from hubmgr (only repositories the registry no "
                              "longer lists)")
    def forget(self, request, queryset):
        repos = list(queryset.select_related("registry"))
        try:
            listed = set(client_for(repos[0].registry).catalog()) if repos else set()
        except RegistryError as exc:
            self.message_user(request, f"Nothing removed: the registry's catalog could not be "
                                       f"read to check ({exc}).", messages.ERROR)
            return
        still = [r.name for r in repos if r.name in listed]
        removed = forget_repositories([r for r in repos if r.name not in listed])
        if removed:
            self.message_user(request, f"Removed from hubmgr: {', '.join(removed)}. The "
                                       "registry was not touched.", messages.SUCCESS)
        if still:
            self.message_user(request, f"Kept, because the registry still lists them: "
                                       f"{', '.join(still)}. Delete their images instead.",
                              messages.WARNING)


class RejectedFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "rejected"

    def lookups(self, request, model_admin):
        return [("1", "could not be applied"), ("0", "applied")]

    def queryset(self, request, queryset):
        if self.value() == "1":
            return queryset.exclude(error="")
        if self.value() == "0":
            return queryset.filter(error="")
        return queryset


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(ReadOnly):
    list_display = ("event_id", "received_at", "action", "repository", "error")
    list_filter = (RejectedFilter, "action")
    search_fields = ("event_id", "repository")
    date_hierarchy = "received_at"
