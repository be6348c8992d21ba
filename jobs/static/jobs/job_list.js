// The job list keeps itself current: every few seconds it asks whether any of your jobs
// changed since the last answer (one cheap query on the server), and redraws the rows
// only when something did. No reloads, no library.
(function () {
  "use strict";
  const table = document.getElementById("job-table");
  if (!table) return;
  const body = table.querySelector("tbody");
  const status = document.getElementById("live-status");
  const url = table.dataset.url;
  const every = Math.max(1, Number(table.dataset.poll || 3)) * 1000;
  let updateTime = table.dataset.updateTime;
  let failures = 0;

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.job_id;
    const link = document.createElement("a");
    link.href = job.page_url;
    link.textContent = job.job_id;
    const first = document.createElement("td");
    first.appendChild(link);
    if (job.tasks) {
      const label = document.createElement("small");
      label.className = "muted";
      label.textContent = "array";
      first.append(" ", label);
    }
    tr.appendChild(first);
    tr.appendChild(cell(job.name));
    tr.appendChild(cell(job.partition));
    const state = cell(job.state, "job-state " + String(job.state).toLowerCase());
    if (job.tasks) {
      // One row per array: its tasks by state ("3 running · 7 pending · 90 done"); its page lists them.
      const counts = document.createElement("small");
      counts.className = "array-counts";
      counts.textContent = job.tasks.summary;
      state.append(document.createElement("br"), counts);
    }
    tr.appendChild(state);
    const reason = cell(job.reason);
    reason.title = job.reason_text || "";
    tr.appendChild(reason);
    tr.appendChild(cell(job.submit_time));
    tr.appendChild(cell(job.elapsed));
    tr.appendChild(cell(job.nodes));
    tr.appendChild(cell(job.cpus));
    tr.appendChild(cell(job.gpus));
    return tr;
  }

  function draw(data) {
    const rows = data.jobs.map(row);
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell("No jobs.");
      td.colSpan = 10;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    status.textContent = data.total + (data.total === 1 ? " job." : " jobs.") + " Updated " + new Date().toLocaleTimeString() + ".";
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
