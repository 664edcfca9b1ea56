from django import template

from hubmgr.web import present

register = template.Library()
register.filter("human_size", present.human_size)


@register.simple_tag
def sort_column(state, field):
    """(next sort value, aria-sort value, arrow) for a sortable column header."""
    if state.sort == f"-{field}":
        return {"next": field, "aria": "descending", "arrow": "↓"}
    if state.sort == field:
        return {"next": f"-{field}", "aria": "ascending", "arrow": "↑"}
    return {"next": f"-{field}", "aria": "none", "arrow": ""}
