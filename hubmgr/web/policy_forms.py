"""The form that creates and changes a cleanup policy, its preview variant, and who may use
it (the pages and the API ask the same)."""

from django import forms
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator

from hubmgr.policies import service
from hubmgr.policies.models import CleanupPolicy
from hubmgr.patterns import MAX_GLOB_TEXT

from .deletions import DELETE_PERMISSION

FIELDS = tuple(service.as_data(CleanupPolicy()))
POLICY_PERMISSION = DELETE_PERMISSION  # the maintainers: whoever may delete images


def require_policy_change(user):
    """Creating, changing, running or deleting a cleanup policy is for maintainers; reading
    one and dry-running it (which changes nothing) is for everyone signed in."""
    if not user.has_perm(POLICY_PERMISSION):
        raise PermissionDenied("You may read cleanup policies and dry-run them, but not "
                               "create, change, run or delete them. Ask an administrator to "
                               "add you to the maintainers group.")


def percent_text(share) -> str:
    """A share (0.9) as the form and the pages write it, in per cent ("90"; "12.5")."""
    return f"{round(share * 100, 6):g}"


class PercentField(forms.FloatField):
    """A share entered in per cent, as the pages show it ("90" is 90%), cleaned to the
    fraction the model stores (0.9) and the API takes."""

    def __init__(self, **kwargs):
        super().__init__(validators=[MinValueValidator(0), MaxValueValidator(100)], **kwargs)
        self.widget.attrs.update({"min": "0", "max": "100", "step": "any",
                                  "inputmode": "decimal"})

    def prepare_value(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return percent_text(value)  # the model's fraction; what was typed stays as it is
        return value

    def clean(self, value):
        value = super().clean(value)
        return None if value is None else value / 100

    def has_changed(self, initial, data):
        return super().has_changed(None if initial is None else initial * 100, data)


class PolicyForm(forms.ModelForm):
    """Validates like the model (full_clean: globs, RE2 expressions, the rules' pairs); the
    view saves through service.save_policy so the change is audited."""

    brake_share = PercentField(
        label="Brake share (%)",
        initial=CleanupPolicy._meta.get_field("brake_share").default,  # a fraction, shown in %
        help_text="Stop a repository whose plan removes more than this percentage of its "
                  "items: 0 to 100 (90 means 90%).")

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

    def invalid_fields(self) -> list:
        """The bound fields with an error, in the form's order, each marked for assistive
        technology (aria-invalid, aria-describedby its error); the first gets autofocus, so
        the browser (or htmx, after a swap) puts the cursor there."""
        invalid = [field for field in self if field.errors]
        for n, field in enumerate(invalid):
            attrs = field.field.widget.attrs
            attrs.update({"aria-invalid": "true", "aria-describedby": f"error-{field.name}"})
            if n == 0:
                attrs["autofocus"] = True
        return invalid


class PreviewForm(PolicyForm):
    """The same settings without the name: a preview needs no name, nor a unique one."""

    class Meta(PolicyForm.Meta):
        fields = tuple(f for f in FIELDS if f != "name")
