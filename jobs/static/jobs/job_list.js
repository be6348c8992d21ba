// The job list keeps itself current: every few seconds it asks whether any of your jobs
// changed since the last answer (one cheap query on the server), and redraws the rows
// only when something did. No reloads, no library. A row drawn here must read exactly as
// the server draws it (templates/jobs/job_list.html): the same badge, the same date and
// duration (window.clusterraFormat, ui/static/ui/format.js), the same ticking elapsed time.
(function () {
  "use strict";
  const table = document.getElementById("job-table");
  if (!table) return;
  const format = window.clusterraFormat;
  const body = table.querySelector("tbody");
  const status = document.getElementById("live-status");
  const url = table.dataset.url;
  const every = Math.max(1, Number(table.dataset.poll || 3)) * 1000;
  const finished = new Set((table.dataset.finishedStates || "").split(" ").filter(Boolean));
  const filtered = table.dataset.filtered === "1";
  let updateTime = table.dataset.updateTime;
  let failures = 0;

  function cell(label, content, className) {
    const td = document.createElement("td");
    td.dataset.label = label;
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content === null || content === undefined ? "" : String(content);
    if (className) td.className = className;
    return td;
  }

  // As the server's {% state_badge %}: the class is the state itself, lower-cased, `_` kept.
  function badge(state) {
    const shown = String(state || "UNKNOWN").toUpperCase();
    const span = document.createElement("span");
    span.className = "badge state-" + (shown.toLowerCase().replace(/[^a-z0-9_]/g, "") || "unknown");
    span.textContent = shown;
    return span;
  }

  // As the server's {% when %}: a <time> with the exact instant, in the one date format.
  function when(iso) {
    if (!iso) return format.when(null);
    const time = document.createElement("time");
    time.dateTime = iso;
    time.textContent = format.when(iso);
    return time;
  }

  // A running job's elapsed time ticks (format.js redraws every <time data-elapsed-since> each second).
  function elapsed(job) {
    const ticking = job.state === "RUNNING" && job.start_time && !job.end_time;
    const text = format.duration(job.elapsed_seconds);
    if (!ticking) return text;
    const time = document.createElement("time");
    time.dataset.elapsedSince = job.start_time;
    time.textContent = text;
    return time;
  }

  function cancelLink(job) {
    if (finished.has(job.state)) return "";
    const link = document.createElement("a");
    link.className = "btn btn-danger";
    // The page asks first (GET); jobs.urls puts it beside the job's own page.
    link.href = job.page_url + "cancel";
    link.textContent = "Cancel";
    const hidden = document.createElement("span");
    hidden.className = "visually-hidden";
    hidden.textContent = " job " + job.job_id;
    link.appendChild(hidden);
    return link;
  }

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.job_id;
    const link = document.createElement("a");
    link.href = job.page_url;
    link.textContent = job.job_id;
    const first = cell("Job", link);
    if (job.tasks) {
      const label = document.createElement("small");
      label.className = "muted";
      label.textContent = "array";
      first.append(" ", label);
    }
    tr.appendChild(first);
    tr.appendChild(cell("Name", job.name));
    tr.appendChild(cell("Partition", job.partition));
    const state = cell("State", badge(job.state), "job-state");
    if (job.tasks) {
      // One row per array: its tasks by state ("3 running · 7 pending · 90 done"); its page lists them.
      const counts = document.createElement("small");
      counts.className = "array-counts";
      counts.textContent = job.tasks.summary;
      state.append(document.createElement("br"), counts);
    }
    tr.appendChild(state);
    const reason = cell("Reason", job.reason);
    reason.title = job.reason_text || "";
    tr.appendChild(reason);
    tr.appendChild(cell("Submitted", when(job.submit_time)));
    tr.appendChild(cell("Elapsed", elapsed(job)));
    tr.appendChild(cell("Nodes", job.nodes, "num"));
    tr.appendChild(cell("CPUs", job.cpus, "num"));
    tr.appendChild(cell("GPUs", job.gpus, "num"));
    tr.appendChild(cell("", cancelLink(job)));
    return tr;
  }

  function draw(data) {
    const rows = data.jobs.map(row);
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.textContent = filtered ? "No jobs match these filters." : "No jobs.";
      td.colSpan = 11;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const time = format.when(new Date(data.update_time * 1000));
    status.textContent = data.total + (data.total === 1 ? " job." : " jobs.") + " Updated " + time + ".";
  }

  async function poll() {
    try {
      const separator = url.includes("?") ? "&" : "?";
      const answer = await fetch(url + separator + "since=" + encodeURIComponent(updateTime), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const data = await answer.json();
      updateTime = data.update_time;
      if (data.changed) draw(data);
      failures = 0;
    } catch (error) {
      failures += 1;
      status.textContent = "Live updates paused (" + error.message + "); retrying.";
    }
    // Back off while the console does not answer, up to a minute.
    setTimeout(poll, Math.min(60000, every * Math.pow(2, failures)));
  }

  setTimeout(poll, every);
})();
