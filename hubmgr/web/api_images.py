"""The registry-wide table in the JSON API: GET /api/v1/images (the page's filters, sort and
paging), and a selection across repositories previewed (POST /api/v1/deletions/preview) and
started as a job per repository (POST /api/v1/deletions)."""

from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from hubmgr.deletion import actions, across
from hubmgr.inventory.catalog import queries, wide
from hubmgr.inventory.registries import default_registry

from .api import ApiError, api_auth, json_body, page_response
from .deletions import MAX_SELECTION, require_delete_permission
from .schema import Boolean, PreviewIds, References, Schema

PREVIEW = Schema({"items": References(MAX_SELECTION), "keep_attached": Boolean()},
                 required=("items",))
START = Schema({"preview_ids": PreviewIds(MAX_SELECTION)}, required=("preview_ids",))


@require_GET
@api_auth
def images(request):
    """Every repository's items, as GET /api/v1/repositories/<name>/images answers one
    repository's, each with its ``repository``; the filters as the /images page takes them."""
    registry = default_registry()
    try:
        state = wide.WideState.from_params(request.GET, max_page_size=1000, strict=True)
    except queries.BadParameter as exc:
        raise ApiError(str(exc)) from None
    return page_response(request, registry, wide.page(registry, state))


@require_POST
@api_auth
def deletion_preview(request):
    """{"items": ["team/app@sha256:…", …], "keep_attached": false}: each repository's plan
    (as POST /api/v1/repositories/<name>/deletions/preview answers it, with ``repository``)
    and ``reclaim_bytes``, what the garbage collector frees once all of them ran (a blob
    that only the items of several repositories link counted once)."""
    require_delete_permission(request.user)
    body = json_body(request, PREVIEW)
    found = across.preview(default_registry(), body["items"], request.user,
                           body.get("keep_attached", False))
    return JsonResponse({"previews": [{"repository": p.repository.name,
                                       **actions.preview_data(p)} for p in found.previews],
                         "reclaim_bytes": found.reclaim_bytes})


@require_POST
@api_auth
def deletion_start(request):
    """{"preview_ids": [...]}: a job per preview, all or none (409 or 410 when one already
    ran or expired, 404 when one is not the caller's)."""
    require_delete_permission(request.user)
    body = json_body(request, START)
    try:
        jobs = across.confirm(default_registry(), body["preview_ids"], request.user)
    except actions.PreviewGone as exc:
        raise ApiError(str(exc), exc.status) from None
    return JsonResponse({"jobs": [{"id": job.pk, "repository": job.repository_name,
                                   "status_url": reverse("api-deletion", args=[job.pk])}
                                  for job in jobs]}, status=202)
