// kafkit console: the only script, embedded in the binary. Pages work without it; it keeps
// the live parts of a page fresh. An element with data-refresh="URL" and data-every="MS" has
// its content replaced by the HTML fragment at URL every MS milliseconds (the server renders
// and escapes it; the console's Content-Security-Policy forbids inline scripts in it anyway).
(function () {
  "use strict";
  function refresh(element) {
    var url = element.getAttribute("data-refresh");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status); }
        return response.text();
      })
      .then(function (html) {
        element.innerHTML = html;
        element.removeAttribute("data-stale");
      })
      .catch(function () { element.setAttribute("data-stale", "true"); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-refresh]");
    Array.prototype.forEach.call(live, function (element) {
      var every = parseInt(element.getAttribute("data-every"), 10) || 10000;
      setInterval(function () {
        if (!document.hidden) { refresh(element); }
      }, Math.max(every, 1000));
    });
  });
})();
