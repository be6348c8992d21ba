// The terminal page: xterm.js filling the window, its keystrokes and the shell's output over the
// console's WebSocket (binary frames), and small JSON text frames for status, warnings and the end.
(function () {
  "use strict";

  // Quick retries first (a blip, a worker restarting); then one every SLOW_RETRY_MS for as long as the page
  // is open, since the shell waits for the cluster's resume window (hours, perhaps). Waking the laptop, the
  // network coming back, looking at the tab again or typing tries at once.
  const QUICK_RETRIES = 6;
  const SLOW_RETRY_MS = 30000;
  const box = document.getElementById("terminal");
  const statusLine = document.getElementById("status");
  const warningLine = document.getElementById("warning");
  const newShell = document.getElementById("new-shell");
  const endShell = document.getElementById("end-shell");
  const recordedNotice = document.getElementById("recorded");
  // Per tab: a reload gets the same shell back, another tab opens its own.
  const resumeKey = "clusterra-terminal:" + box.dataset.cluster;
  const encoder = new TextEncoder();

  const term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontSize: 14,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    // The DOM renderer clips each row to its cell height, and at lineHeight 1 a row is exactly as tall as
    // the font's ascent plus descent: DejaVu Sans Mono draws "_" at the very bottom of that, so at 14 px on
    // a 1x screen nothing of it is left (xterm.js #4067: "a_b" reads "a b"). A little more height puts the
    // baseline higher in the row and the underscore inside it, at any size; the browser test checks pixels.
    lineHeight: 1.2,
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  term.focus();

  // The screen as text, for tests and for anyone debugging from the console.
  window.term = term;
  window.termText = function () {
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
    return lines.join("\n").trimEnd();
  };

  let socket = null;
  let ended = false;
  let opened = false;
  let retries = 0;
  let retryTimer = null;
  let countdown = null;

  function setStatus(text, state) {
    statusLine.textContent = text;
    statusLine.dataset.state = state;
  }

  function socketUrl() {
    const params = new URLSearchParams({ cols: term.cols, rows: term.rows });
    if (box.dataset.cwd) params.set("cwd", box.dataset.cwd);
    const token = sessionStorage.getItem(resumeKey);
    if (token) params.set("resume", token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + box.dataset.socket + "?" + params.toString();
  }

  function send(data) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
  }

  function sendControl(message) {
    send(JSON.stringify(message));
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    ended = false;
    opened = false;
    newShell.hidden = true;
    const ws = new WebSocket(socketUrl());
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.onopen = function () {
      opened = true;
    };
    ws.onmessage = function (event) {
      if (typeof event.data !== "string") {
        term.write(new Uint8Array(event.data));
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "status") onStatus(message);
      else if (message.type === "warning") onWarning(message);
      else if (message.type === "closed") onClosed(message);
    };
    ws.onclose = function () {
      if (socket !== ws) return;
      socket = null;
      endShell.hidden = true;
      if (ended) return;
      if (!opened) {
        // A refused handshake looks like a network error to a page; a signed-out person is the usual cause.
        checkSignedIn().then(function (signedIn) {
          if (signedIn) {
            retry();
          } else {
            const reason = "you are signed out. Sign in again, then reload this page.";
            onClosed({ code: "signed_out", reason: reason }, false);
          }
        });
        return;
      }
      retry();
    };
  }

  function retry() {
    if (socket || ended) return; // a reconnect is already under way (the tab came back meanwhile)
    retries += 1;
    clearTimeout(retryTimer);
    if (!navigator.onLine) {
      // Nothing to try while offline; the "online" event reconnects.
      const offline = "Connection lost: this computer is offline. Reconnecting when the network is back…";
      setStatus(offline, "reconnecting");
      return;
    }
    const delay = retries > QUICK_RETRIES ? SLOW_RETRY_MS : Math.min(500 * 2 ** (retries - 1), 8000);
    setStatus("Connection lost; reconnecting in " + Math.ceil(delay / 1000) + " s…", "reconnecting");
    retryTimer = setTimeout(connect, delay);
  }

  // Back from sleep or from another tab, or the network is here again: no need to wait for the next try.
  // The socket of a sleeping laptop died without the page running, so its token still names the shell.
  function reconnectNow() {
    if (ended || socket) return; // connected (or connecting), or ended for good
    retries = 0;
    connect();
  }
  window.addEventListener("online", reconnectNow);
  window.addEventListener("focus", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") reconnectNow();
  });

  function checkSignedIn() {
    return fetch(location.href, { method: "HEAD", redirect: "manual", credentials: "same-origin" })
      .then(function (response) {
        return response.ok;
      })
      .catch(function () {
        return true; // offline: keep trying
      });
  }

  function onStatus(message) {
    setStatus(message.message, message.state);
    if (message.state === "connected") {
      retries = 0;
      // The page was drawn with the cluster's policy of that moment; the shell says whether it is recorded.
      if (typeof message.recorded === "boolean") recordedNotice.hidden = !message.recorded;
      sessionStorage.setItem(resumeKey, message.resume);
      endShell.hidden = false;
      term.focus();
    }
  }

  function onWarning(message) {
    clearInterval(countdown);
    if (message.seconds === null || message.seconds === undefined) {
      warningLine.hidden = true;
      return;
    }
    let left = message.seconds;
    const show = function () {
      warningLine.textContent =
        message.kind === "idle"
          ? "No keystrokes for a while: this terminal closes in " + left + " s unless you type something."
          : "This terminal reaches its maximum length and closes in " + left + " s; save your work.";
      left = Math.max(0, left - 1);
    };
    show();
    warningLine.hidden = false;
    countdown = setInterval(show, 1000);
  }

  // Why a terminal ended, as the page shows it: a shell the person left (exit status 0) or closed is the
  // normal end, not an error; every other reason (a failure, the idle or length limit, offboarding, a
  // withdrawn grant) keeps its own sentence and the colour of a closed terminal.
  function onClosed(message, forget = true) {
    ended = true;
    clearInterval(countdown);
    warningLine.hidden = true;
    if (forget) sessionStorage.removeItem(resumeKey);
    if (message.code === "shell_exited" && message.exit_status === 0) {
      setStatus("The shell ended. Open a new one when you need it.", "ended");
    } else if (message.code === "closed") {
      setStatus("Closed: " + message.reason, "ended");
    } else {
      setStatus("Closed: " + message.reason, "closed");
    }
    endShell.hidden = true;
    newShell.hidden = false;
  }

  term.onData(function (data) {
    if (!socket) reconnectNow(); // typing into a page that lost its socket brings it back
    send(encoder.encode(data));
  });
  term.onBinary(function (data) {
    send(Uint8Array.from(data, function (c) { return c.charCodeAt(0) & 255; }));
  });
  term.onResize(function (size) {
    sendControl({ type: "resize", cols: size.cols, rows: size.rows });
  });
  new ResizeObserver(function () {
    fit.fit();
  }).observe(box);

  newShell.addEventListener("click", function () {
    sessionStorage.removeItem(resumeKey);
    retries = 0;
    term.reset();
    setStatus("Connecting…", "connecting");
    connect();
  });
  endShell.addEventListener("click", function () {
    sendControl({ type: "close" });
  });

  connect();
})();
