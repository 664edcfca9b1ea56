from django import template

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
