// A job that has not ended keeps its page current: the page reloads every few seconds while it is
// shown, unless the person turns that off (kept for the tab), is selecting output to copy, or is
// typing. A <meta http-equiv="refresh"> could not be turned off, and a screen reader lost its place.
(function () {
  "use strict";
  const box = document.getElementById("auto-refresh");
  if (!box) return;
  const key = "clusterra.jobPageRefresh";
  const every = Math.max(5, Number(box.dataset.seconds || 10)) * 1000;
  document.getElementById("auto-refresh-control").hidden = false;
  box.checked = window.sessionStorage.getItem(key) !== "off";
  box.addEventListener("change", function () {
    window.sessionStorage.setItem(key, box.checked ? "on" : "off");
  });

  function busy() {
    const selection = window.getSelection();
    if (selection && !selection.isCollapsed) return true;
    const active = document.activeElement;
    return Boolean(active && active !== box && active.matches("input, textarea, select"));
  }

  window.setInterval(function () {
    if (box.checked && !document.hidden && !busy()) window.location.reload();
  }, every);
})();
