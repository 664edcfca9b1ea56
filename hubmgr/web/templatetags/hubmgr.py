from django import template

register = template.Library()


@register.filter
def short_digest(digest):
    """sha256:0123456789abcdef... -> 0123456789ab"""
    return digest.split(":", 1)[-1][:12] if digest else ""


@register.simple_tag
def sort_column(state, field):
    """(next sort value, aria-sort value, arrow) for a sortable column header."""
    if state.sort == f"-{field}":
        return {"next": field, "aria": "descending", "arrow": "↓"}
    if state.sort == field:
        return {"next": f"-{field}", "aria": "ascending", "arrow": "↑"}
    return {"next": f"-{field}", "aria": "none", "arrow": ""}
