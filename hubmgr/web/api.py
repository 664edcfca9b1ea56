"""JSON API. Auth: a session (a POST also needs its CSRF token) or `Authorization: Bearer
<personal token>`."""

import json
import logging
from functools import wraps

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.db import DatabaseError
from django.http import Http404, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from hubmgr.deletion import actions, control
from hubmgr.deletion.protection import Protection
from hubmgr.inventory.catalog import listing, queries
from hubmgr.inventory.models import Repository
from hubmgr.inventory.pulls import coverage
from hubmgr.inventory.pulls.coverage import Coverage
from hubmgr.inventory.registries import default_registry

from .deletions import MAX_SELECTION, get_job, require_delete_permission
from .lookups import get_repository
from .present import with_protection
from .models import ApiToken, hash_token
from .schema import Boolean, Digests, Invalid, Schema, Text

log = logging.getLogger("hubmgr.api")
TOKEN_TOUCH_SECONDS = 300
_csrf = CsrfViewMiddleware(lambda request: None)


class ApiError(Exception):
    """A request the API refuses, with the status and the message to answer."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status

    @classmethod
    def invalid(cls, exc: ValidationError) -> "ApiError":
        """A model's ValidationError (full_clean) as the 400 naming its first field."""
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        field, messages = next(iter(errors.items()))
        return cls(f'"{field}": {" ".join(messages)}')


def _touch(token):
    """Record when a token was last used, at most every few minutes, so that reads rarely
    write; the record is best-effort and never fails the request (a SQLite database busy with
    a writer would)."""
    now = timezone.now()
    if token.last_used_at and (now - token.last_used_at).total_seconds() < TOKEN_TOUCH_SECONDS:
        return
    try:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    except DatabaseError as exc:
        log.warning("token last_used_at not recorded token=%s error=%s", token.hint, exc)


def _authenticate(request) -> bool:
    """Set request.user from a bearer token or the session; True when it was a token."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        token = ApiToken.objects.select_related("user").filter(
            key_hash=hash_token(header[7:].strip())).first()
        if token is None or not token.user.is_active:
            raise ApiError("invalid API token", 401)
        _touch(token)
        request.user = token.user
        return True
    if not request.user.is_authenticated:
        raise ApiError("authentication required: log in or send 'Authorization: Bearer "
                       "<token>'", 401)
    return False


WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _check_post(request, by_token):
    """A write (POST, PATCH, ...) with a session passes Django's CSRF check, since a browser
    sends the session cookie along with another site's request. Another site cannot send
    our bearer token, so a token needs no CSRF token. A body, except DELETE's none, is JSON."""
    if not by_token and _csrf.process_view(request, None, (), {}) is not None:
        raise ApiError("CSRF check failed: with a session, send the csrftoken cookie's value "
                       "in the X-CSRFToken header from this site's pages, or use a bearer "
                       "token", 403)
    if request.method != "DELETE" and request.content_type != "application/json":
        raise ApiError("the body must be JSON, sent with 'Content-Type: application/json'", 415)


def api_auth(view):
    """Authenticate by bearer token or session; answer JSON errors, never HTML pages."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            by_token = _authenticate(request)
            if request.method in WRITE_METHODS:
                _check_post(request, by_token)
            return view(request, *args, **kwargs)
        except Http404 as exc:
            return JsonResponse({"error": str(exc)}, status=404)
        except PermissionDenied as exc:
            return JsonResponse({"error": str(exc) or "permission denied"}, status=403)
        except RequestDataTooBig:
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 2**20
            return JsonResponse({"error": f"the body is larger than {limit} MB; send fewer "
                                          "digests at once"}, status=413)
        except ApiError as exc:
            return JsonResponse({"error": str(exc)}, status=exc.status)

    # The CSRF check is _check_post's, made only for a session.
    return csrf_exempt(wrapper)


def iso_time(value):
    return value.isoformat() if value else None


def item_json(row, since, children=None, attached=None):
    """An item; ``since`` is its registry's pulls_observed_since. stale is true, false, or
    null when hubmgr has not observed pulls long enough to tell (hubmgr.inventory.pulls.coverage);
    never_pulled is true only when no pull of the item can have been missed. ``artifact`` is
    null for an image or image index, else what it is (kind: signature, attestation, sbom,
    chart, artifact); ``subject`` the digest it belongs to; ``orphaned`` true when that is not
    in the repository; ``attached`` the artifacts attached to it; ``foreign_size`` the bytes of
    layers it lists that the registry does not store (not in ``size``); ``protected`` why a
    protected-tag rule keeps it (present.with_protection), or null."""
    info = row.artifact_info
    data = {
        "digest": row.digest,
        "media_type": row.media_type,
        "type": row.kind,
        "artifact": {"kind": info.kind, "label": info.label,
                     "media_type": info.media_type or None,
                     "tool": info.tool or None, "predicates": list(info.predicates),
                     "referrers_list": info.referrers_list}
        if row.artifact or row.referrers_list else None,
        "subject": row.subject or None,
        "orphaned": row.is_orphan,
        "foreign_size": row.foreign_size,
        "tags": row.tags,
        "platform": row.platform,
        "size": row.size,
        "last_pushed": iso_time(row.last_pushed),
        "last_pushed_source": row.last_pushed_source or None,
        "last_pulled": iso_time(row.last_pulled),
        "stale": row.stale,
        "never_pulled": row.never_pulled,
        "pull_data_since": iso_time(since),
        "error": row.error or None,
        "protected": getattr(row, "protected", "") or None,
    }
    if row.is_index:
        data["children"] = [item_json(c, since) for c in children or []]
    else:
        data["children"] = []
    data["attached"] = [item_json(a, since) for a in attached or []]
    return data


@require_GET
@api_auth
def repositories(request):
    """?search= (part of the name), sort= (name, size, items, last_pushed; "-" first for
    descending), page=, page_size= (at most 1,000)."""
    try:
        state = listing.ListState.from_params(request.GET, max_page_size=1000, strict=True)
    except queries.BadParameter as exc:
        raise ApiError(str(exc)) from None
    page = listing.page(default_registry(), state)
    return JsonResponse({"count": page.count, "page": page.number, "pages": page.pages,
                         "results": [repository_json(r) for r in page.rows]})


def repository_json(repo):
    return {"name": repo.name, "items": repo.item_count, "tagged": repo.tagged_count,
            "indexes": repo.index_count, "orphaned": repo.orphan_count, "size": repo.total_size,
            "last_pushed": iso_time(repo.last_pushed), "last_pulled": iso_time(repo.last_pulled),
            "last_synced": iso_time(repo.last_synced_at)}


@require_GET
@api_auth
def images(request, name):
    repo = get_repository(name)
    try:
        state = queries.TableState.from_params(request.GET, max_page_size=1000, strict=True)
    except queries.BadParameter as exc:
        raise ApiError(str(exc)) from None
    page = queries.page(repo, state)
    return page_response(request, repo.registry, page, repo)


def page_response(request, registry, page, repo=None):
    """A page of the table as JSON: one repository's (``repo``), or any repositories' of
    ``registry`` (each item then says its ``repository``), with each item's children and
    attached artifacts, marked for Stale and protection."""
    repos = {repo.pk: repo} if repo is not None else Repository.objects.select_related(
        "registry").in_bulk({row.repository_id for row in page.rows})
    kids = queries.children_of_many(registry, [r for r in page.rows if r.is_index])
    attached = queries.attachments(repo, page.rows)
    coverage.mark([a for found in attached.values() for a in found], Coverage.of(registry))
    protection = Protection.current()
    for row in page.rows:
        owner = repos[row.repository_id]
        with_protection(owner, [row], protection=protection)
        with_protection(owner, kids.get(row.id, []), below=row, protection=protection)
        with_protection(owner, attached.get(row.id, []), protection=protection)
    since = registry.pulls_observed_since
    # count is exact when count_exact is true; otherwise (a search matching more than
    # queries.COUNT_CAP items) it is that cap and there are more items, and more pages than
    # pages. next and previous are the neighbouring pages' URLs (keyset cursors), or null.
    return JsonResponse({"count": page.count, "count_exact": page.count_exact,
                         "page": page.number, "pages": page.pages,
                         "next": _page_url(request, page, "next"),
                         "previous": _page_url(request, page, "previous"),
                         "pull_data_since": iso_time(since),
                         "results": [({} if repo is not None else
                                      {"repository": r.repository_name})
                                     | item_json(r, since, kids.get(r.id), attached.get(r.id))
                                     for r in page.rows]})


def _page_url(request, page, which):
    if not (page.has_next if which == "next" else page.has_previous):
        return None
    params = request.GET.copy()
    for key in ("after", "before"):
        params.pop(key, None)
    if which == "next":
        params["page"], params["after"] = page.number + 1, page.next_cursor
    else:
        params["page"] = page.number - 1
        if page.previous_cursor:
            params["before"] = page.previous_cursor
    return f"{request.path}?{params.urlencode()}"


def json_body(request, schema: Schema) -> dict:
    """The JSON object body, checked by ``schema`` (hubmgr.web.schema): its values, or an
    ApiError naming the first wrong field."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise ApiError('the body must be a JSON object, e.g. {"digests": [...]}') from None
    try:
        return schema.parse(body)
    except Invalid as exc:
        raise ApiError(str(exc)) from None


# keep_attached: keep what is attached to the items that go (signatures, attestations,
# SBOMs, referrers), orphaned, instead of deleting it with them (planner.plan).
PREVIEW = Schema({"digests": Digests(MAX_SELECTION), "keep_attached": Boolean()},
                 required=("digests",))
START = Schema({"preview_id": Text(100), "digests": Digests(MAX_SELECTION),
                "keep_attached": Boolean()})


@require_POST
@api_auth
def deletion_preview(request, name):
    repo = get_repository(name)
    require_delete_permission(request.user)
    body = json_body(request, PREVIEW)
    found = actions.preview(repo, body["digests"], request.user,
                            body.get("keep_attached", False))
    return JsonResponse(actions.preview_data(found))


@require_POST
@api_auth
def deletion_start(request, name):
    """{"preview_id": ...} runs that preview exactly (with the choice it was made with);
    {"digests": [...], "keep_attached": ...} plans afresh."""
    repo = get_repository(name)
    require_delete_permission(request.user)
    body = json_body(request, START)
    if ("preview_id" in body) == ("digests" in body):
        raise ApiError('send {"preview_id": "..."} or {"digests": [...]}, one of them')
    if "preview_id" in body:
        if "keep_attached" in body:
            raise ApiError('"keep_attached" goes with "digests": a preview runs with the '
                           "choice it was previewed with")
        try:
            job = actions.confirm(repo, body["preview_id"], request.user)
        except actions.PreviewGone as exc:
            raise ApiError(str(exc), exc.status) from None
    else:
        job = actions.start(repo, body["digests"], request.user,
                            body.get("keep_attached", False))
    return JsonResponse({"id": job.pk, "status_url": reverse("api-deletion", args=[job.pk])},
                        status=202)


@require_GET
@api_auth
def deletion_status(request, job_id):
    return JsonResponse(job_json(get_job(job_id)))


def job_json(job):
    """A job as GET /api/v1/deletions/<id> answers it: actions.job_data and who cancelled or
    retried it (control.control_data)."""
    return {**actions.job_data(job), **control.control_data(job)}


NO_FIELDS = Schema({})


@require_POST
@api_auth
def deletion_cancel(request, job_id):
    """Cancel a job: 200 with the job (cancelled, or still finishing a DELETE in flight);
    409 when it was already cancelled or had finished."""
    job = get_job(job_id)
    require_delete_permission(request.user)
    json_body(request, NO_FIELDS)
    try:
        job = control.cancel(job, request.user)
    except control.Refused as exc:
        raise ApiError(str(exc), exc.status) from None
    return JsonResponse(job_json(job))


@require_POST
@api_auth
def deletion_retry(request, job_id):
    """A new job of a finished job's failed items: 202 {"id", "status_url", "retry_of"};
    409 when it was already retried, has not finished, or has no failed item."""
    job = get_job(job_id)
    require_delete_permission(request.user)
    json_body(request, NO_FIELDS)
    try:
        new = control.retry(job, request.user)
    except control.Refused as exc:
        raise ApiError(str(exc), exc.status) from None
    return JsonResponse({"id": new.pk, "status_url": reverse("api-deletion", args=[new.pk]),
                         "retry_of": job.pk}, status=202)
