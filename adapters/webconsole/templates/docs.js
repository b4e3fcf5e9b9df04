(function () {
  var bar = document.getElementById("job-progress");
  var status = document.getElementById("job-status");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  function show(job) {
    bar.max = Math.max(job.total, 1);
    bar.value = job.total ? job.done : (job.finished ? 1 : 0);
    if (job.error) { status.textContent = job.action + " failed: " + job.error; return; }
    status.textContent = job.finished
      ? job.action + " " + job.what + ": " + job.summary
      : job.action + " " + job.what + ": " + job.done + " of " + (job.total || "?") + " " + job.current;
  }
  function poll(id) {
    fetch("/console/api/documents/jobs/" + id, {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (job) {
        show(job);
        if (job.finished) { window.location.reload(); } else { setTimeout(function () { poll(id); }, 500); }
      })
      .catch(function () { status.textContent = "Lost track of the work; reload the page."; });
  }
  Array.prototype.forEach.call(document.querySelectorAll("form.job-form"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var data = new FormData(form);
      var body = form.dataset.encoding === "multipart" ? data : new URLSearchParams(data);
      status.textContent = "Starting…";
      bar.value = 0;
      fetch(form.action, {method: "POST", body: body, credentials: "same-origin",
                          headers: {"X-CSRF-Token": csrf}})
        .then(function (r) { return r.json().then(function (b) { return [r.ok, b]; }); })
        .then(function (result) {
          if (!result[0]) { status.textContent = "Refused: " + result[1].error; return; }
          show(result[1]); poll(result[1].job);
        })
        .catch(function () { status.textContent = "The request failed."; });
    });
  });
  // Work started before this page was loaded: show it when it ends.
  if (status.dataset.running) { setTimeout(function () { window.location.reload(); }, 2000); }
})();
