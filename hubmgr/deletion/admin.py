from django.contrib import admin

from .models import DeletionItem, DeletionJob, ProtectionAudit


class ReadOnly:
    """A record of what happened (a deletion job and its items, a policy run, a change to a
    policy): viewed in the admin, never added, changed or deleted there (only retention
    pruning removes old ones). First among a ModelAdmin's or an inline's bases."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ItemInline(ReadOnly, admin.TabularInline):
    model = DeletionItem
    extra = 0
    can_delete = False
    fields = ("digest", "kind", "reason", "status", "attempts", "last_error")
    readonly_fields = fields


@admin.register(DeletionJob)
class DeletionJobAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "repository_name", "status", "created_by", "created_at", "finished_at",
                    "reclaim_state")
    list_filter = ("status", "reclaim_state")
    inlines = [ItemInline]


@admin.register(ProtectionAudit)
class ProtectionAuditAdmin(ReadOnly, admin.ModelAdmin):
    """Changes to the protected tags, made on their page or through the API (which audit
    them); the rules themselves are not edited here, where a change would not be audited."""

    list_display = ("at", "user", "action", "rule")
    list_filter = ("action",)
