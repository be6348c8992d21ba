// The `clusterra login` hand-off: post the new token to the CLI's loopback address without a second click.
// A static file rather than an inline script, so the Content-Security-Policy can forbid inline scripts.
(function () {
  "use strict";
  const form = document.getElementById("handoff");
  if (form) {
    form.submit();
  }
})();
