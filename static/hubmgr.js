// Selection count, select-page, expand/collapse of index rows, copy digest.
(function () {
  function updateSelection() {
    const boxes = document.querySelectorAll("input.select-item");
    const checked = document.querySelectorAll("input.select-item:checked").length;
    const count = document.getElementById("selected-count");
    if (count) count.textContent = checked + " selected";
    const button = document.getElementById("preview-delete");
    if (button) button.disabled = checked === 0;
    const page = document.getElementById("select-page");
    if (page) {
      page.checked = boxes.length > 0 && checked === boxes.length;
      page.indeterminate = checked > 0 && checked < boxes.length;
    }
    const all = document.getElementById("select-all-matching");
    if (all) all.hidden = !(page && page.checked);
  }

  document.addEventListener("change", function (event) {
    if (event.target.id === "select-page") {
      document.querySelectorAll("input.select-item").forEach(function (box) {
        box.checked = event.target.checked;
      });
    }
    if (event.target.id === "select-page" || event.target.classList.contains("select-item")) {
      updateSelection();
    }
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
    const copy = event.target.closest("button.copy");
    if (copy && navigator.clipboard) {
      navigator.clipboard.writeText(copy.dataset.copy).then(function () {
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = "Copy"; }, 1500);
      });
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    const target = event.detail.target;
    if (target && target.id === "image-table") updateSelection();
  });
  document.addEventListener("htmx:load", function (event) {
    const el = event.detail.elt;
    if (el && el.classList && el.classList.contains("children")) {
      el.dataset.loaded = "1";
      const button = document.querySelector('button.expand[aria-controls="' + el.id + '"]');
      if (button) button.setAttribute("aria-expanded", "true");
    }
  });
  document.addEventListener("DOMContentLoaded", updateSelection);
})();
