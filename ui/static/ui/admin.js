// Names Django admin's own widgets leave without one, so a screen reader (and axe) can tell what each is.
// Each fix is small, looks only at the admin's markup and may run twice: the widgets are built by
// scripts of their own (SelectFilter2 at "load", select2 when jQuery is ready), so this runs after them.
(function () {
  "use strict";

  function labelText(element) {
    return element ? element.textContent.replace(/:\s*$/, "").trim() : "";
  }

  function fix() {
    // filter_horizontal's search icon carries an aria-label a plain <span> may not have; as an image it may.
    document.querySelectorAll(".help-tooltip[aria-label]:not([role])").forEach(function (icon) {
      icon.setAttribute("role", "img");
    });

    // autocomplete_fields (select2) names its box only by the chosen value: put the field's label first.
    document.querySelectorAll(".select2-selection[role=combobox][aria-labelledby]").forEach(function (box) {
      const container = box.closest(".select2-container");
      const select = container && container.previousElementSibling;
      const label = select && select.id && document.querySelector('label[for="' + select.id + '"]');
      if (!label) return;
      if (!label.id) label.id = select.id + "-label";
      const ids = box.getAttribute("aria-labelledby").split(/\s+/);
      if (ids[0] !== label.id) box.setAttribute("aria-labelledby", [label.id].concat(ids).join(" "));
      // Its inner read-only "textbox" (the chosen value) is named the same way: "User alice".
      box.querySelectorAll("[role=textbox][id]:not([aria-labelledby])").forEach(function (shown) {
        shown.setAttribute("aria-labelledby", label.id + " " + shown.id);
      });
    });

    // A date-and-time field's label points at no input (Django's split widget has two): name each one.
    document.querySelectorAll("p.datetime").forEach(function (pair) {
      const row = pair.closest(".flex-container, .form-row");
      const name = labelText(row && row.querySelector("label"));
      pair.querySelectorAll("input.vDateField, input.vTimeField").forEach(function (input) {
        if (!input.hasAttribute("aria-label") && !document.querySelector('label[for="' + input.id + '"]')) {
          const part = input.classList.contains("vDateField") ? "date" : "time";
          input.setAttribute("aria-label", name ? name + ", " + part : part);
        }
      });
    });

    // A list filter offers a blank value ("?cluster=") with no words: say what it is.
    document.querySelectorAll("#changelist-filter a").forEach(function (link) {
      if (!link.textContent.trim()) link.textContent = "(blank)";
    });

    // A tabular inline scrolls sideways on a phone: a keyboard must be able to reach it to scroll it.
    document.querySelectorAll('.inline-group[data-inline-type="tabular"]:not([tabindex])').forEach(function (group) {
      const heading = group.querySelector("h2");
      group.setAttribute("tabindex", "0");
      group.setAttribute("role", "region");
      if (heading) group.setAttribute("aria-label", heading.textContent.trim());
    });
  }

  window.addEventListener("load", function () {
    fix();
    // select2 and the inline formsets may finish a moment after "load".
    window.setTimeout(fix, 100);
  });
})();
