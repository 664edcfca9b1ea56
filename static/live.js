// An open Image Management table stays current: every few seconds, while the tab is visible,
// it asks for the repository's version (an ETag; 304 while unchanged). When the version moved,
// selected items the repository no longer holds leave the selection (a quiet note says so),
// and the table is fetched again with its own URL (search, filter, sort, page, cursor); the
// selection is restored by digest (hubmgr.js) and expanded indexes are expanded again.
(function () {
  const PERIOD_MS = 3000;
  let expanded = null;  // ids of the children rows open before a refresh
  let focused = null;  // a selector for the control that had the focus in the table
  let checking = false;  // one check (and the refresh it starts) at a time

  function table() { return document.getElementById("image-table"); }

  // Visible, no dialog open, and no htmx request going (a search or sort the user started
  // wins over a refresh; htmx marks a requesting element with .htmx-request until it ends).
  function idle() {
    const dialog = document.getElementById("preview-dialog");
    return document.visibilityState === "visible" && !(dialog && dialog.open) &&
      !document.querySelector(".htmx-request");
  }

  // The focused control, as a selector that finds it again in the new table (htmx restores
  // focus only to elements with an id).
  function focusSelector(el) {
    const active = document.activeElement;
    if (!active || active.id || !el.contains(active)) return null;
    const row = active.closest("tbody.item");
    const kind = ["select-item", "expand", "copy", "sort"].find(function (c) {
      return active.classList.contains(c);
    });
    if (!kind) return null;
    if (row) return 'tbody.item[data-digest="' + row.dataset.digest + '"] .' + kind;
    if (active.dataset.sort) return 'a.sort[data-sort="' + active.dataset.sort + '"]';
    return null;
  }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; }
    catch (e) { return ""; }
  }

  function selectionKey() {
    const form = document.getElementById("selection-form");
    return form ? "hubmgr:selection:" + form.dataset.repo : null;
  }

  // Drop selected digests the repository no longer holds; resolves when done (or failed).
  function pruneSelection(el) {
    const key = selectionKey();
    let sel;
    try { sel = JSON.parse(sessionStorage.getItem(key)); } catch (e) { sel = null; }
    if (!key || !sel || sel.all || !sel.digests || sel.digests.length === 0) return Promise.resolve();
    const body = new URLSearchParams();
    sel.digests.forEach(function (d) { body.append("digest", d); });
    return fetch(el.dataset.selectionUrl, {
      method: "POST", body: body, credentials: "same-origin", cache: "no-store",
      headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" },
    }).then(function (resp) { return resp.ok ? resp.json() : { gone: [] }; }).then(function (data) {
      if (!data.gone || data.gone.length === 0) return;
      const gone = new Set(data.gone);
      const now = JSON.parse(sessionStorage.getItem(key)) || { digests: [] };
      now.digests = (now.digests || []).filter(function (d) { return !gone.has(d); });
      sessionStorage.setItem(key, JSON.stringify(now));
      const note = document.getElementById("live-note");
      if (note) {
        note.textContent = data.gone.length === 1
          ? "1 selected item was deleted and left the selection."
          : data.gone.length + " selected items were deleted and left the selection.";
      }
    }).catch(function () { /* keep the selection; the preview checks it again */ });
  }

  function refresh(el) {
    return pruneSelection(el).then(function () {
      const current = table();
      if (!current || !idle()) return;  // the next check tries again
      expanded = Array.from(current.querySelectorAll('button.expand[aria-expanded="true"]'))
        .map(function (b) { return b.getAttribute("aria-controls"); });
      focused = focusSelector(current);
      current.classList.add("quiet");  // no dimming for a refresh nobody asked for
      htmx.trigger(current, "hubmgr:changed");
    });
  }

  function check() {
    const el = table();
    if (!el || !el.dataset.versionUrl || !idle() || checking) return;
    const shown = el.dataset.version;
    checking = true;
    fetch(el.dataset.versionUrl, {
      credentials: "same-origin", cache: "no-store",
      headers: { "If-None-Match": '"' + shown + '"', "Accept": "application/json" },
    }).then(function (resp) {
      if (resp.redirected) { clearInterval(timer); return null; }  // logged out: stop asking
      if (resp.status !== 200) return null;  // 304: unchanged; an error: try again later
      return resp.json();
    }).then(function (data) {
      const now = table();
      if (data && now === el && String(data.version) !== el.dataset.version) return refresh(el);
    }).catch(function () { /* offline for a moment: the next check tries again */ })
      .finally(function () { checking = false; });
  }

  document.addEventListener("htmx:load", function (event) {
    const el = event.detail.elt;
    if (!el || el.id !== "image-table" || !expanded) return;
    const open = expanded;
    expanded = null;
    const again = focused && el.querySelector(focused);
    focused = null;
    if (again) again.focus({ preventScroll: true });
    open.forEach(function (id) {
      const button = el.querySelector('button.expand[aria-controls="' + id + '"]');
      if (button) htmx.trigger(button, "click");
    });
  });

  const timer = setInterval(check, PERIOD_MS);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") check();
  });
})();
