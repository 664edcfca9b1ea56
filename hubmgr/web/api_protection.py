"""JSON API for protected tags (deletion.protection): anyone signed in may list and read the
rules; adding, changing (PATCH) or removing one takes ``deletion.manage_protected_tags``, and
goes through protection.save_rule / delete_rule, so it is audited with the requesting user.
Auth and errors as in api.py."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from hubmgr.deletion import protection
from hubmgr.deletion.models import ProtectedTag
from hubmgr.patterns import MAX_GLOB_LENGTH, MAX_REGEX_LENGTH

from .api import ApiError, api_auth, iso_time, json_body
from .schema import Schema, Text

RULE = Schema({"tag_regex": Text(MAX_REGEX_LENGTH),
               "repositories": Text(MAX_GLOB_LENGTH),
               "note": Text(ProtectedTag._meta.get_field("note").max_length, null=True)})
NEW_RULE = Schema(RULE.fields, required=("tag_regex",))


def rule_json(rule) -> dict:
    return {**protection.as_data(rule), "url": reverse("api-protected-tag", args=[rule.pk]),
            "created_at": iso_time(rule.created_at), "updated_at": iso_time(rule.updated_at),
            "created_by": rule.created_by.username if rule.created_by else None,
            "updated_by": rule.updated_by.username if rule.updated_by else None}


def require_manage_permission(user):
    if not user.has_perm(protection.PERMISSION):
        raise PermissionDenied("Only administrators may change protected tags (the "
                               "permission \"Can add, change and remove protected tags\").")


def get_rule(rule_id) -> ProtectedTag:
    rule = ProtectedTag.objects.select_related("created_by", "updated_by").filter(
        pk=rule_id).first()
    if rule is None:
        raise Http404(f"There is no protected-tag rule {rule_id}.")
    return rule


def _save(rule, body, user):
    for name, value in body.items():
        setattr(rule, name, "" if value is None else value)
    try:
        return protection.save_rule(rule, user)
    except ValidationError as exc:
        raise ApiError.invalid(exc) from None


@require_http_methods(["GET", "POST"])
@api_auth
def protected_tags(request):
    """GET: every rule. POST: add one (201)."""
    if request.method == "POST":
        require_manage_permission(request.user)
        rule = _save(ProtectedTag(), json_body(request, NEW_RULE), request.user)
        return JsonResponse(rule_json(rule), status=201)
    found = list(ProtectedTag.objects.select_related("created_by", "updated_by"))
    return JsonResponse({"count": len(found), "results": [rule_json(r) for r in found]})


@require_http_methods(["GET", "PATCH", "DELETE"])
@api_auth
def protected_tag(request, rule_id):
    """GET: the rule. PATCH: change the fields sent. DELETE: remove it (204)."""
    rule = get_rule(rule_id)
    if request.method == "PATCH":
        require_manage_permission(request.user)
        _save(rule, json_body(request, RULE), request.user)
    elif request.method == "DELETE":
        require_manage_permission(request.user)
        protection.delete_rule(rule, request.user)
        return HttpResponse(status=204)
    return JsonResponse(rule_json(rule))
