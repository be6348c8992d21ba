// The browser's side of the console's one date format and one duration format: window.clusterraFormat
// writes exactly what the server's `when` and `duration` filters write (ui/templatetags/ui.py), so a row
// redrawn live reads the same as one drawn by the server. It also ticks elapsed times: every
// <time data-elapsed-since="ISO"> shows duration(now - since), redrawn each second.
(function (root) {
  "use strict";

  // What a reader sees for "no value", as on the server.
  const EMPTY = "—";
  // Python names a zone by tzdata's abbreviation (CET, EST, JST); a browser knows an abbreviation only in
  // the locale of the region that uses it, so those locales are asked in turn. A zone with none gets the
  // numeric name tzdata gives it (-03, +0545).
  const NAMING_LOCALES = ["en-US", "en-GB", "en-AU", "en-IN", "en-NZ", "en-IE", "en-ZA", "ja-JP"];
  const ABBREVIATION = /^[A-Z]{2,5}$/;
  const HAS_OFFSET = /(Z|[+-]\d\d(:?\d\d)?)$/i;
  const NAIVE = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)/;

  const formatters = new Map();

  function formatter(locale, options) {
    const key = locale + JSON.stringify(options);
    let found = formatters.get(key);
    if (!found) {
      found = new Intl.DateTimeFormat(locale, options);
      formatters.set(key, found);
    }
    return found;
  }

  function pageZone() {
    const html = root.document && root.document.documentElement;
    return (html && html.dataset.timeZone) || "UTC";
  }

  function wallClock(date, zone) {
    const parts = {};
    const options = {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    };
    for (const part of formatter("en-US", options).formatToParts(date)) parts[part.type] = part.value;
    return parts;
  }

  function offsetName(date, zone) {
    const p = wallClock(date, zone);
    const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    const minutes = Math.round((asUtc - Math.floor(date.getTime() / 1000) * 1000) / 60000);
    const sign = minutes < 0 ? "-" : "+";
    const hours = String(Math.floor(Math.abs(minutes) / 60)).padStart(2, "0");
    const rest = Math.abs(minutes) % 60;
    return sign + hours + (rest ? String(rest).padStart(2, "0") : "");
  }

  function zoneName(date, zone) {
    for (const locale of NAMING_LOCALES) {
      const parts = formatter(locale, { timeZone: zone, timeZoneName: "short" }).formatToParts(date);
      const name = (parts.find((part) => part.type === "timeZoneName") || {}).value || "";
      if (ABBREVIATION.test(name)) return name;
    }
    return offsetName(date, zone);
  }

  // `2026-12-07 14:05 UTC`: minutes are enough for a person, and the zone is always named.
  function when(iso, zone) {
    zone = zone || pageZone();
    if (iso instanceof Date) iso = iso.toISOString();
    if (typeof iso !== "string" || !iso.trim()) return EMPTY;
    iso = iso.trim();
    try {
      if (!HAS_OFFSET.test(iso)) {
        // A time without a zone is shown as written, followed by the page's zone (as the server does).
        const naive = NAIVE.exec(iso);
        if (!naive) return EMPTY;
        return `${naive[1]}-${naive[2]}-${naive[3]} ${naive[4]}:${naive[5]} ${zone}`;
      }
      const date = new Date(iso);
      if (Number.isNaN(date.getTime())) return EMPTY;
      const p = wallClock(date, zone);
      return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute} ${zoneName(date, zone)}`;
    } catch (e) {
      return EMPTY; // an unknown zone name: say nothing rather than something wrong
    }
  }

  // `0:00:05`, `1:02:03`, `2 d 03:04:05`: hours always, days only when there are some.
  function duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return EMPTY;
    const total = Math.trunc(seconds);
    if (total < 0) return EMPTY;
    const days = Math.floor(total / 86400);
    const hours = Math.floor((total % 86400) / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const secs = total % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (days) return `${days} d ${two(hours)}:${two(minutes)}:${two(secs)}`;
    return `${hours}:${two(minutes)}:${two(secs)}`;
  }

  root.clusterraFormat = Object.freeze({ when: when, duration: duration });

  const doc = root.document;
  if (!doc) return; // loaded outside a page (the test runs it in node)

  function tick() {
    const now = Date.now();
    for (const time of doc.querySelectorAll("time[data-elapsed-since]")) {
      const since = Date.parse(time.dataset.elapsedSince);
      if (Number.isNaN(since)) continue;
      // A browser clock a little behind the server's must not show a negative time.
      const text = duration(Math.max(0, (now - since) / 1000));
      if (time.textContent !== text) time.textContent = text;
    }
    // Just after the next whole second, when Slurm's whole-second times tick over.
    root.setTimeout(tick, 1000 - (Date.now() % 1000) + 20);
  }

  if (doc.readyState === "loading") {
    doc.addEventListener("DOMContentLoaded", tick);
  } else {
    tick();
  }
})(typeof window !== "undefined" ? window : globalThis);
