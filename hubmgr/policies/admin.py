from django.contrib import admin

from hubmgr.deletion.admin import ReadOnly

from . import service
from .models import CleanupPolicy, PolicyAudit, PolicyRun


@admin.register(CleanupPolicy)
class CleanupPolicyAdmin(admin.ModelAdmin):
    """Every save and delete goes through the audited service functions."""

    list_display = ("name", "mode", "schedule", "updated_at", "updated_by")
    list_filter = ("mode", "schedule")
    search_fields = ("name",)
    readonly_fields = ("created_at", "created_by", "updated_at", "updated_by")
    fieldsets = (
        (None, {"fields": ("name", "include", "exclude", "mode")}),
        ("Schedule", {"fields": ("schedule", "run_at", "weekday")}),
        ("Remove", {"fields": ("remove_tag_regex", "remove_tag_days", "remove_untagged_days",
                               "remove_stale", "remove_orphans_days")}),
        ("Keep (always wins)", {"fields": ("keep_last", "keep_tag_regex", "keep_pulled_days")}),
        ("Brake, per repository", {"fields": ("brake_share", "brake_count")}),
        ("History", {"fields": readonly_fields}),
    )

    def save_model(self, request, obj, form, change):
        service.save_policy(obj, request.user)

    def delete_model(self, request, obj):
        service.delete_policy(obj, request.user)

    def delete_queryset(self, request, queryset):
        for policy in queryset:
            service.delete_policy(policy, request.user)


@admin.register(PolicyRun)
class PolicyRunAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "policy", "status", "dry_run", "started_at", "finished_at")
    list_filter = ("status", "dry_run")


@admin.register(PolicyAudit)
class PolicyAuditAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("at", "policy_name", "action", "user")
    list_filter = ("action",)
