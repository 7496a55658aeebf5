// xiaoer console: quick phrases and keyboard shortcuts. Everything else is htmx and plain forms.
(function () {
  "use strict";

  function replyBox() {
    return document.querySelector('form[data-action="reply"] textarea[name="text"]');
  }

  // Inserts text at the cursor of the reply box.
  function insert(text) {
    var box = replyBox();
    if (!box || box.disabled) { return; }
    var start = box.selectionStart || 0;
    var end = box.selectionEnd || 0;
    box.value = box.value.slice(0, start) + text + box.value.slice(end);
    box.selectionStart = box.selectionEnd = start + text.length;
    box.focus();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-phrase]") : null;
    if (button) {
      event.preventDefault();
      insert(button.getAttribute("data-phrase"));
    }
  });

  document.addEventListener("keydown", function (event) {
    // Alt+1 … Alt+9: the shop's quick phrases in order.
    if (event.altKey && event.key >= "1" && event.key <= "9") {
      var phrases = document.querySelectorAll("button[data-phrase]");
      var phrase = phrases[Number(event.key) - 1];
      if (phrase) {
        event.preventDefault();
        insert(phrase.getAttribute("data-phrase"));
      }
    }
    // Ctrl+Enter sends the reply.
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      var box = replyBox();
      if (box && document.activeElement === box && box.form) {
        event.preventDefault();
        box.form.requestSubmit();
      }
    }
  });

  // Events that happened while the page was loading or reconnecting were not seen: refresh
  // every live part once the event stream is (re)opened.
  document.addEventListener("htmx:sseOpen", function () {
    var live = document.querySelectorAll("[hx-get][hx-trigger*='sse:']");
    for (var i = 0; i < live.length; i++) {
      window.htmx.ajax("GET", live[i].getAttribute("hx-get"), { target: live[i], swap: "innerHTML" });
    }
  });

  // Keep the newest message in view when the transcript refreshes.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target && event.target.id === "transcript") {
      event.target.scrollTop = event.target.scrollHeight;
    }
  });
  window.addEventListener("load", function () {
    var transcript = document.getElementById("transcript");
    if (transcript) { transcript.scrollTop = transcript.scrollHeight; }
  });
})();
