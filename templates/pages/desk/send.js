// The desk's send page: every few seconds, the send's figures from /desk/send.json, put in place.
// Without this script the page shows the figures as they were when it was loaded (and a link to reload).
(function () {
  var page = document.getElementById('send');
  if (!page || !window.fetch) { return; }
  var every = 1000 * Number(page.dataset.refresh || 2);
  function show(figures) {
    page.querySelectorAll('[data-figure]').forEach(function (element) {
      element.textContent = String(figures[element.dataset.figure]);
    });
    page.querySelectorAll('[data-state]').forEach(function (element) {
      element.hidden = element.dataset.state !== figures.state;
    });
    var bar = document.getElementById('send-progress');
    bar.max = figures.total || 1;
    bar.value = figures.finished;
  }
  function ask() {
    fetch(page.dataset.source, {credentials: 'same-origin', cache: 'no-store'})
      .then(function (answer) {
        if (!answer.ok || !answer.headers.get('content-type').startsWith('application/json')) {
          throw new Error('signed out');  // the session ended: the page stays as it is
        }
        return answer.json();
      })
      .then(function (figures) { show(figures); setTimeout(ask, every); })
      .catch(function () { setTimeout(ask, every * 5); });
  }
  setTimeout(ask, every);
})();
