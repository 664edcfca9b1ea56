// Selection (kept across pages in sessionStorage), select page / all matching, expand and
// collapse of index rows, copy digest, the preview dialog and toasts.
(function () {
  function form() { return document.getElementById("selection-form"); }
  function storeKey() { return "hubmgr:selection:" + (form() ? form().dataset.repo : ""); }

  function load() {
    try { return JSON.parse(sessionStorage.getItem(storeKey())) || { digests: [] }; }
    catch (e) { return { digests: [] }; }
  }
  function save(sel) { sessionStorage.setItem(storeKey(), JSON.stringify(sel)); render(sel); }

  function render(sel) {
    const f = form();
    if (!f) return;
    const inputs = document.getElementById("selection-inputs");
    inputs.replaceChildren();
    function hidden(name, value) {
      const input = document.createElement("input");
      input.type = "hidden"; input.name = name; input.value = value;
      inputs.appendChild(input);
    }
    let count;
    if (sel.all) {
      hidden("all_matching", "1");
      if (sel.all.params !== undefined) {  // the registry-wide table: every filter it had
        new URLSearchParams(sel.all.params).forEach(function (value, name) { hidden(name, value); });
      } else { hidden("search", sel.all.search); hidden("filter", sel.all.filter); }
      count = sel.all.count;
    } else {
      sel.digests.forEach(function (d) { hidden("digest", d); });
      count = sel.digests.length;
    }
    document.getElementById("selected-count").textContent =
      (sel.all ? (sel.all.more ? "All matching (more than " + count.toLocaleString("en") + ")"
                               : "All " + count + " matching") : count) + " selected";
    const button = document.getElementById("preview-delete");
    button.disabled = count === 0;
    document.getElementById("clear-selection").hidden = count === 0;
    const chosen = new Set(sel.digests);
    const boxes = document.querySelectorAll("input.select-item");
    boxes.forEach(function (box) { box.checked = !!sel.all || chosen.has(box.value); });
    const checked = document.querySelectorAll("input.select-item:checked").length;
    const page = document.getElementById("select-page");
    if (page) {
      page.checked = boxes.length > 0 && checked === boxes.length;
      page.indeterminate = checked > 0 && checked < boxes.length;
    }
    const all = document.getElementById("select-all-matching");
    if (all) all.hidden = !(page && page.checked) || !!sel.all;
  }

  document.addEventListener("change", function (event) {
    const target = event.target;
    if (target.id !== "select-page" && !target.classList.contains("select-item")) return;
    const sel = load();
    if (sel.all) {  // leaving "all matching": keep what is visibly checked
      sel.all = null;
      sel.digests = [];
      document.querySelectorAll("input.select-item").forEach(function (b) {
        if (b !== target) sel.digests.push(b.value);
      });
    }
    const set = new Set(sel.digests);
    const boxes = target.id === "select-page" ? document.querySelectorAll("input.select-item") : [target];
    boxes.forEach(function (box) {
      if (target.checked) set.add(box.value); else set.delete(box.value);
    });
    sel.digests = Array.from(set);
    save(sel);
  });

  document.addEventListener("click", function (event) {
    const expand = event.target.closest("button.expand");
    if (expand) {
      const target = document.getElementById(expand.getAttribute("aria-controls"));
      if (target && target.dataset.loaded) {
        target.hidden = !target.hidden;
        expand.setAttribute("aria-expanded", String(!target.hidden));
      }
      return;
    }
    if (event.target.id === "select-all-matching") {
      const table = document.getElementById("image-table");
      save({ digests: [], all: { search: table.dataset.search, filter: table.dataset.filter,
                                 params: table.dataset.params,
                                 count: Number(event.target.dataset.count),
                                 more: !!event.target.dataset.more } });
      return;
    }
    if (event.target.id === "clear-selection") { save({ digests: [] }); return; }
    if (event.target.closest(".modal-cancel")) {
      document.getElementById("preview-dialog").close();
      return;
    }
    const copy = event.target.closest("button.copy");
    if (copy) copyText(copy);
  });

  // Copy a button's data-copy. Without the Clipboard API (a page served over plain http
  // other than localhost), or when it refuses, the text is selected in a read-only field
  // beside the button (the one there, or one added) for the user to copy.
  function copyText(button) {
    const text = button.dataset.copy;
    function say(words, ms) {
      button.textContent = words;
      setTimeout(function () { button.textContent = "Copy"; }, ms);
    }
    function select() {
      let field = button.parentElement.querySelector("input[readonly]");
      if (!field) {
        field = document.createElement("input");
        field.type = "text"; field.readOnly = true; field.value = text;
        field.className = "copy-fallback";
        field.setAttribute("aria-label", button.getAttribute("aria-label") || "Text to copy");
        button.after(field);
      }
      field.focus();
      field.select();
      say("Press Ctrl+C", 4000);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { say("Copied", 1500); }, select);
    } else {
      select();
    }
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    const target = event.detail.target;
    if (!target) return;
    if (target.id === "image-table" || target.closest && target.closest("#image-table")) render(load());
  });
  // The dialog opens once htmx has settled its content, so "Delete forever" is already wired
  // to htmx when a (fast) user can press it.
  document.addEventListener("htmx:afterSettle", function (event) {
    const target = event.detail.target;
    if (!target || target.id !== "preview-content") return;
    const dialog = document.getElementById("preview-dialog");
    if (!dialog.open) dialog.showModal();
  });
  document.addEventListener("htmx:load", function (event) {
    const el = event.detail.elt;
    if (el && el.classList && el.classList.contains("children")) {
      el.dataset.loaded = "1";
      const button = document.querySelector('button.expand[aria-controls="' + el.id + '"]');
      if (button) button.setAttribute("aria-expanded", "true");
    }
    if (el && el.id === "image-table") render(load());
  });
  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    let message = "The request failed (HTTP " + xhr.status + ").";
    try {
      const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      const alert = doc.querySelector("[role=alert]");
      if (alert) message = alert.textContent.trim();
    } catch (e) { /* keep the generic message */ }
    toast(message, true);
  });
  function toast(text, error) {
    const el = document.createElement("div");
    el.className = "toast floating" + (error ? " error" : "");
    el.setAttribute("role", "alert");
    el.textContent = text;
    document.body.appendChild(el);
    setTimeout(function () { el.remove(); }, 8000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    render(load());
    document.body.addEventListener("hubmgr:job-started", function () {
      const dialog = document.getElementById("preview-dialog");
      if (dialog && dialog.open) dialog.close();
      save({ digests: [] });
    });
  });
})();

// Back and Forward: htmx restores a page from its snapshot (or the server), but a snapshot
// keeps the markup, not what was typed or chosen, so a toolbar could say "All" over untagged
// rows. The URL is the page's state: every search form takes its fields' values from it.
(function () {
  function fillFromUrl() {
    const params = new URLSearchParams(location.search);
    document.querySelectorAll("form[role=search]").forEach(function (form) {
      form.querySelectorAll("input[name], select[name]").forEach(function (field) {
        if (field.type === "hidden" || field.type === "checkbox" || field.type === "radio") return;
        const value = params.get(field.name);
        if (field.tagName === "SELECT") {
          const option = Array.from(field.options).find(function (o) { return o.value === (value || ""); });
          field.value = option ? option.value : (field.options[0] ? field.options[0].value : "");
        } else {
          field.value = value || "";
        }
      });
    });
  }
  document.addEventListener("htmx:historyRestore", fillFromUrl);
  // A restore htmx did not do (the browser's own, from its page cache) fires popstate or
  // pageshow; after htmx's restore, which runs in the same popstate, the fields are right too.
  window.addEventListener("popstate", function () { setTimeout(fillFromUrl, 0); });
  window.addEventListener("pageshow", function (event) { if (event.persisted) fillFromUrl(); });
})();
