// latchkey's footer script for web sites that embed family A's HTML blocks: watches each
// browser session named in data-latchkey-events (Server-Sent Events of its LoginStatus) and,
// when one logs in or out, dispatches a cancelable `latchkey:status` event on the document
// (detail: the LoginStatus) and reloads the page unless a listener cancelled it.
(function () {
  "use strict";
  var me = document.currentScript;
  var urls = ((me && me.getAttribute("data-latchkey-events")) || "").split(" ");
  if (!window.EventSource) return;
  urls.forEach(function (url) {
    if (!url) return;
    var last = null;
    var source = new EventSource(url);
    source.addEventListener("status", function (e) {
      var status = JSON.parse(e.data);
      if (last !== null && last !== status.loggedin) {
        var event = new CustomEvent("latchkey:status", { detail: status, cancelable: true });
        if (document.dispatchEvent(event)) window.location.reload();
      }
      last = status.loggedin;
    });
  });
})();
