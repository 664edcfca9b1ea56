from django.contrib import admin

from .models import DeletionItem, DeletionJob


class ItemInline(admin.TabularInline):
    model = DeletionItem
    extra = 0
    can_delete = False
    fields = ("digest", "kind", "reason", "status", "attempts", "last_error")
    readonly_fields = fields


@admin.register(DeletionJob)
class DeletionJobAdmin(admin.ModelAdmin):
    list_display = ("id", "repository_name", "status", "created_by", "created_at", "finished_at",
                    "reclaim_state")
    list_filter = ("status", "reclaim_state")
    inlines = [ItemInline]
    readonly_fields = ("repository", "repository_name", "created_by", "deadline", "status",
                       "reclaim_bytes", "kept", "finished_at", "reclaim_state", "freed_bytes",
                       "reclaimed_bytes", "reclaimed_at", "reclaim_checked_at", "reclaim_error")
