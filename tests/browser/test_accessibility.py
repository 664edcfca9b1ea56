"""Every page passes axe-core (the copy axe-playwright-python bundles) with no serious or
critical violation, light and dark, at 1280 x 800 and at 390 x 844 (issue 24). One browser
context per page, loaded once; the four modes are a change of viewport and of
prefers-color-scheme on it. Screenshots of each land in test-output/."""

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.support.browser import OUTPUT, login
from tests.support.pages import LOGIN, PERMISSIONS, every_page

MODES = [("desktop", (1280, 800), "light"), ("desktop", (1280, 800), "dark"),
         ("phone", (390, 844), "light"), ("phone", (390, 844), "dark")]
BLOCKING = {"serious", "critical"}
AXE = Axe()
# axe's defaults, and WCAG 2.2's 24 x 24 px tap targets (target-size, off by default).
OPTIONS = {"resultTypes": ["violations"], "rules": {"target-size": {"enabled": True}}}


def violations(page):
    """axe's serious and critical violations on the page, in words: rule, impact, and the
    elements it names with axe's own explanation."""
    found = AXE.run(page, options=OPTIONS).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']}\n" + "\n".join(
        f"    {', '.join(map(str, node['target']))}: {node.get('failureSummary', '')}"
        for node in v["nodes"][:6]) for v in found if v["impact"] in BLOCKING]


def check_every_mode(page, name):
    OUTPUT.mkdir(exist_ok=True)
    problems = []
    for screen, (width, height), scheme in MODES:
        page.set_viewport_size({"width": width, "height": height})
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=str(OUTPUT / f"a11y-{name}-{screen}-{scheme}.png"), full_page=True)
        problems += [f"[{screen} {scheme}] {v}" for v in violations(page)]
    assert not problems, f"{name}: axe found\n" + "\n".join(problems)


PAGES = ["overview", "repositories", "repository", "images", "storage", "jobs", "job",
         "policies", "policy", "run", "policy-form", "protected-tags"]


@pytest.mark.parametrize("name", PAGES)
def test_the_page_has_no_serious_accessibility_violation(browser, live_server, transactional_db,
                                                         name):
    pages = dict(every_page())
    if name not in pages:
        pytest.skip(f"no {name} page in this checkout")
    page = login(browser, live_server, "maria", PERMISSIONS)
    try:
        page.goto(f"{live_server.url}{pages[name]}")
        expect(page.locator("main h1")).to_be_visible()
        check_every_mode(page, name)
        if name in ("repository", "images"):  # and its preview, with "Delete forever"
            page.set_viewport_size({"width": 1280, "height": 800})
            page.check("#select-page")
            page.click("#preview-delete")
            expect(page.locator("dialog#preview-dialog[open] #delete-forever")).to_be_visible()
            check_every_mode(page, "preview" if name == "repository" else f"{name}-preview")
        assert page.csp_violations == []
    finally:
        page.context.close()


def test_the_login_page_has_no_serious_accessibility_violation(browser, live_server,
                                                               transactional_db):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}{LOGIN[1]}")
        expect(page.locator("#id_username")).to_be_visible()
        check_every_mode(page, "login")
    finally:
        context.close()


def test_the_checks_can_fail(browser, live_server, transactional_db):
    """A page with an unlabelled field and white on the dark theme's old red is refused."""
    page = login(browser, live_server, "maria", PERMISSIONS)
    try:
        page.goto(f"{live_server.url}/protected-tags/")
        page.evaluate("""() => {
            const input = document.createElement("input");
            document.querySelector("main").appendChild(input);
            const button = document.createElement("button");
            button.textContent = "Delete forever";
            button.className = "danger-fill";
            button.style.background = "#ff6b6b";
            button.style.color = "#ffffff";
            document.querySelector("main").appendChild(button);
        }""")
        found = "\n".join(violations(page))
        assert "label (critical)" in found and "color-contrast (serious)" in found
    finally:
        page.context.close()


def test_the_keyboard_skips_to_the_content_and_sees_the_current_page(browser, live_server,
                                                                    transactional_db):
    page = login(browser, live_server, "maria", PERMISSIONS)
    try:
        page.goto(f"{live_server.url}/policies/")
        page.keyboard.press("Tab")  # the first stop: the skip link, shown when focused
        skip = page.locator("a.skip-link")
        expect(skip).to_be_focused()
        box = skip.bounding_box()
        assert box["y"] >= 0 and box["height"] >= 24
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        # The current section is marked for the eye too, not only for a screen reader.
        style = "el => [getComputedStyle(el).fontWeight, getComputedStyle(el).borderBottomColor]"
        current = page.locator("nav.main-nav a[aria-current=page]")
        expect(current).to_have_text("Policies")
        other = page.locator("nav.main-nav a", has_text="Deletion jobs")
        assert current.evaluate(style) != other.evaluate(style)
        assert page.csp_violations == []
    finally:
        page.context.close()
