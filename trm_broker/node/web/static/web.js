// The only script: tells the sign-in form the browser's time zone, so dates are shown in it.
// Without JavaScript, dates are in UTC.
"use strict";
document.querySelectorAll("input[data-browser-time-zone]").forEach(function (input) {
  try {
    input.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    input.value = "";
  }
});
