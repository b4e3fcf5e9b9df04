(function () {
  var bar = document.getElementById("job-progress");
  var status = document.getElementById("job-status");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  function show(job) {
    bar.max = Math.max(job.total, 1);
    bar.value = job.total ? job.done : (job.finished ? 1 : 0);
    if (job.error) { status.textContent = {{ t("console.docs.js_failed", action="{action}", error="{error}")|tojson }}.replace("{action}", job.action_name).replace("{error}", job.error); return; }
    status.textContent = job.finished
      ? job.action_name + " " + job.what + ": " + job.summary
      : job.action_name + " " + job.what + ": " + {{ t("console.docs.js_progress", done="{done}", total="{total}")|tojson }}
          .replace("{done}", job.done).replace("{total}", job.total || "?") + " " + job.current;
  }
  function poll(id) {
    fetch("/console/api/documents/jobs/" + id, {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (job) {
        show(job);
        if (job.finished) { window.location.reload(); } else { setTimeout(function () { poll(id); }, 500); }
      })
      .catch(function () { status.textContent = {{ t("console.docs.js_lost")|tojson }}; });
  }
  Array.prototype.forEach.call(document.querySelectorAll("form.job-form"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var data = new FormData(form);
      var body = form.dataset.encoding === "multipart" ? data : new URLSearchParams(data);
      status.textContent = {{ t("console.docs.js_starting")|tojson }};
      bar.value = 0;
      fetch(form.action, {method: "POST", body: body, credentials: "same-origin",
                          headers: {"X-CSRF-Token": csrf}})
        .then(function (r) { return r.json().then(function (b) { return [r.ok, b]; }); })
        .then(function (result) {
          if (!result[0]) { status.textContent = {{ t("console.docs.js_refused", error="{error}")|tojson }}.replace("{error}", result[1].error); return; }
          show(result[1]); poll(result[1].job);
        })
        .catch(function () { status.textContent = {{ t("console.docs.js_request_failed")|tojson }}; });
    });
  });
  // Work started before this page was loaded: show it when it ends.
  if (status.dataset.running) { setTimeout(function () { window.location.reload(); }, 2000); }
})();
