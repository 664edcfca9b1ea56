"""The form that creates and changes a cleanup policy, and its preview variant."""

from django import forms
from django.core.validators import MaxLengthValidator

from hubmgr.policies import service
from hubmgr.policies.models import CleanupPolicy
from hubmgr.patterns import MAX_GLOB_TEXT

FIELDS = tuple(service.as_data(CleanupPolicy()))


class PolicyForm(forms.ModelForm):
    """Validates like the model (full_clean: globs, RE2 expressions, the rules' pairs); the
    view saves through service.save_policy so the change is audited."""

    class Meta:
        model = CleanupPolicy
        fields = FIELDS
        widgets = {
            "include": forms.Textarea(attrs={"rows": 3, "placeholder": "team/*"}),
            "exclude": forms.Textarea(attrs={"rows": 2, "placeholder": "team/base"}),
            "run_at": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("include", "exclude"):  # as the API bounds them
            self.fields[name].validators.append(MaxLengthValidator(MAX_GLOB_TEXT))


class PreviewForm(PolicyForm):
    """The same settings without the name: a preview needs no name, nor a unique one."""

    class Meta(PolicyForm.Meta):
        fields = tuple(f for f in FIELDS if f != "name")
