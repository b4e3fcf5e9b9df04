(function () {
  var form = document.getElementById("import-form");
  if (!form) return;
  var bar = document.getElementById("import-progress");
  var status = document.getElementById("import-status");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  function show(job) {
    bar.max = Math.max(job.total, 1);
    bar.value = job.total ? job.done : (job.finished ? 1 : 0);
    if (job.error) { status.textContent = {{ t("console.import.failed", error="{error}")|tojson }}.replace("{error}", job.error); return; }
    status.textContent = job.finished
      ? job.report.join("\n")
      : {{ t("console.import.embedding", done="{done}", total="{total}")|tojson }}
          .replace("{done}", job.done).replace("{total}", job.total || "?");
  }
  function poll(id) {
    fetch("/console/api/knowledge/import/" + id, {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (job) { show(job); if (!job.finished) setTimeout(function () { poll(id); }, 300); })
      .catch(function () { status.textContent = {{ t("console.import.lost")|tojson }}; });
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    status.textContent = {{ t("console.import.uploading")|tojson }};
    bar.value = 0;
    fetch(form.action, {method: "POST", body: new FormData(form), credentials: "same-origin",
                        headers: {"X-CSRF-Token": csrf}})
      .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
      .then(function (result) {
        if (!result[0]) { status.textContent = {{ t("console.import.refused", error="{error}")|tojson }}.replace("{error}", result[1].error); return; }
        show(result[1]); poll(result[1].job);
      })
      .catch(function () { status.textContent = {{ t("console.import.upload_failed")|tojson }}; });
  });
})();
