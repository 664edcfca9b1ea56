from django import template
from django.utils.safestring import mark_safe

from hubmgr.registry.artifacts import TOOLS
from hubmgr.units import human_size

register = template.Library()
register.filter("human_size", human_size)


@register.filter
def tool_name(tool):
    """The name of the tool that made an artifact (artifacts.TOOLS), as people write it."""
    return TOOLS.get(tool, tool)


@register.simple_tag
def sort_column(state, field):
    """(next sort value, aria-sort value, arrow) for a sortable column header."""
    if state.sort == f"-{field}":
        return {"next": field, "aria": "descending", "arrow": "↓"}
    if state.sort == field:
        return {"next": f"-{field}", "aria": "ascending", "arrow": "↑"}
    return {"next": f"-{field}", "aria": "none", "arrow": "↕"}


@register.filter
def in_seconds(seconds):
    """A wait as a person says it: "in 25 s", "in 4 min", "in 2 h"; "now" for none left."""
    if seconds is None:
        return ""
    if seconds <= 0:
        return "now"
    if seconds < 120:
        return f"in {seconds} s"
    if seconds < 7200:
        return f"in {round(seconds / 60)} min"
    return f"in {round(seconds / 3600)} h"


# The navigation's sections, by the first words of their pages' URL names.
SECTIONS = (("home", "overview"), ("repositor", "repositories"), ("job", "jobs"),
            ("polic", "policies"), ("protected-tag", "protected-tags"))


@register.simple_tag(takes_context=True)
def nav_current(context, section):
    """' aria-current="page"' on the navigation link of the section the page belongs to (a
    page whose URL name no section starts is its own section: "images" for /images)."""
    match = getattr(context.get("request"), "resolver_match", None)
    name = match.url_name if match else ""
    own = next((s for prefix, s in SECTIONS if name and name.startswith(prefix)), name)
    return mark_safe(' aria-current="page"') if own == section else ""
