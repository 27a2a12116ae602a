/* Keyboard focus across htmx swaps of the portal's live parts.
 *
 * The live parts (templates/portal/_status*.html, _split_*.html) poll only a
 * text with no controls; the controls are replaced once, when the state
 * changes. htmx itself puts focus back on a control that has the same id in
 * the new content. When the focused control is gone (e.g. "Void" once the
 * payment is captured), focus goes to the first control of the new content,
 * else to the element named by its data-focus-fallback, never to <body>.
 */
(function () {
  "use strict";
  var focusWasInside = false;

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    var active = document.activeElement;
    focusWasInside = Boolean(
      event.detail.shouldSwap && target && active && active !== document.body && target.contains(active)
    );
  });

  // After settling, not swapping: htmx has then wired up the new controls (a form
  // submitted before that would be sent without htmx, as a full page load).
  document.addEventListener("htmx:afterSettle", function (event) {
    if (!focusWasInside) return;
    focusWasInside = false;
    var active = document.activeElement;
    if (active && active !== document.body && document.body.contains(active)) return;
    var swapped = event.target;
    var next = swapped.querySelector("button:not([disabled]), a[href], input:not([type=hidden]), select, textarea");
    if (!next && swapped.dataset && swapped.dataset.focusFallback) {
      next = document.querySelector(swapped.dataset.focusFallback);
    }
    if (next) next.focus();
  });
})();
