from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from hubmgr.web import (
    api, api_policies, deletions, health, hooks, live, overview, policy_pages, views)

handler400 = views.bad_request

urlpatterns = [
    path("", overview.overview, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("repositories/", views.repositories, name="repositories"),
    # Repository names contain slashes; "/-/" cannot occur in one, so it separates sub-pages.
    path("repositories/<path:name>/-/children/<str:digest>", views.index_children,
         name="index-children"),
    path("repositories/<path:name>/-/preview", deletions.preview, name="deletion-preview"),
    path("repositories/<path:name>/-/delete", deletions.delete, name="deletion-start"),
    path("repositories/<path:name>/-/version", live.version, name="repository-version"),
    path("repositories/<path:name>/-/selection", live.selection, name="repository-selection"),
    path("repositories/<path:name>/-/sync", live.repository_sync, name="repository-sync"),
    path("repositories/<path:name>/-/storage", overview.repository_storage,
         name="repository-storage"),
    path("repositories/<path:name>", views.repository, name="repository"),
    path("sync/", live.catalog_sync, name="catalog-sync"),
    path("jobs/", deletions.job_list, name="jobs"),
    path("jobs/<int:job_id>", deletions.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/progress", deletions.progress, name="job-progress"),
    path("policies/", policy_pages.policy_list, name="policies"),
    path("policies/new", policy_pages.policy_new, name="policy-new"),
    path("policies/preview", policy_pages.policy_preview, name="policy-preview"),
    path("policies/<int:policy_id>/", policy_pages.policy_detail, name="policy"),
    path("policies/<int:policy_id>/edit", policy_pages.policy_edit, name="policy-edit"),
    path("policies/<int:policy_id>/delete", policy_pages.policy_delete, name="policy-delete"),
    path("policies/<int:policy_id>/dry-run", policy_pages.policy_dry_run,
         name="policy-dry-run"),
    path("policies/<int:policy_id>/run", policy_pages.policy_run, name="policy-run-now"),
    path("policies/runs/<int:run_id>/", policy_pages.run_detail, name="policy-run"),
    path("policies/runs/<int:run_id>/confirm-brake", policy_pages.run_confirm_brake,
         name="policy-run-confirm-brake"),
    path("hooks/registry", hooks.registry_hook, name="registry-hook"),
    path("api/v1/repositories", api.repositories, name="api-repositories"),
    path("api/v1/repositories/<path:name>/images", api.images, name="api-images"),
    path("api/v1/repositories/<path:name>/deletions/preview", api.deletion_preview,
         name="api-deletion-preview"),
    path("api/v1/repositories/<path:name>/deletions", api.deletion_start,
         name="api-deletion-start"),
    path("api/v1/deletions/<int:job_id>", api.deletion_status, name="api-deletion"),
    path("api/v1/policies", api_policies.policies, name="api-policies"),
    path("api/v1/policies/<int:policy_id>", api_policies.policy, name="api-policy"),
    path("api/v1/policies/<int:policy_id>/dry-run", api_policies.dry_run,
         name="api-policy-dry-run"),
    path("api/v1/policies/<int:policy_id>/runs", api_policies.policy_runs,
         name="api-policy-runs"),
    path("api/v1/policies/<int:policy_id>/audit", api_policies.policy_audit,
         name="api-policy-audit"),
    path("api/v1/policy-runs/<int:run_id>", api_policies.run_status, name="api-policy-run"),
    path("api/v1/policy-runs/<int:run_id>/confirm-brake", api_policies.confirm_brake,
         name="api-policy-run-confirm-brake"),
]
