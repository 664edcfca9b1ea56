"""The protected-tags page: the rules no deletion overrides (deletion.protection), with their
audit. Everyone signed in sees them; holders of ``deletion.manage_protected_tags`` add, change
and remove them here, through protection.save_rule / delete_rule (audited)."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from hubmgr.deletion import protection
from hubmgr.deletion.models import ProtectedTag, ProtectionAudit

from .api_protection import get_rule, require_manage_permission

MAX_AUDIT = 50  # audit entries shown on the page


class RuleForm(forms.ModelForm):
    """Validates like the model (RE2 expression, glob); the view saves through save_rule."""

    class Meta:
        model = ProtectedTag
        fields = protection.AUDITED
        widgets = {"tag_regex": forms.TextInput(attrs={"placeholder": "^(latest|prod)$",
                                                       "spellcheck": "false"}),
                   "repositories": forms.TextInput(attrs={"spellcheck": "false"})}


def _page(request, form=None, editing=None, status=200):
    can_manage = request.user.has_perm(protection.PERMISSION)
    return render(request, "deletion/protected_tags.html", {
        "rules": ProtectedTag.objects.select_related("created_by", "updated_by"),
        "audit": ProtectionAudit.objects.select_related("user")[:MAX_AUDIT],
        "can_manage": can_manage, "editing": editing,
        "form": form if form is not None else (RuleForm() if can_manage else None),
    }, status=status)


@require_http_methods(["GET", "POST"])
@login_required
def protected_tags(request):
    """GET: the rules and their audit. POST: add a rule."""
    if request.method == "POST":
        require_manage_permission(request.user)
        form = RuleForm(request.POST)
        if not form.is_valid():
            return _page(request, form, status=400)
        protection.save_rule(form.instance, request.user)
        return redirect("protected-tags")
    return _page(request)


@require_http_methods(["GET", "POST"])
@login_required
def protected_tag_edit(request, rule_id):
    require_manage_permission(request.user)
    rule = get_rule(rule_id)
    form = RuleForm(request.POST if request.method == "POST" else None, instance=rule)
    if request.method == "POST":
        if form.is_valid():
            protection.save_rule(form.instance, request.user)
            return redirect("protected-tags")
        return _page(request, form, editing=rule, status=400)
    return _page(request, form, editing=rule)


@require_POST
@login_required
def protected_tag_delete(request, rule_id):
    require_manage_permission(request.user)
    protection.delete_rule(get_rule(rule_id), request.user)
    return redirect("protected-tags")
