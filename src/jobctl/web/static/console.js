// jobctl web console: live countdowns, a periodic refresh, the schedule form's
// date-time shortcuts (in the job's time zone). Plain JavaScript, no library.
"use strict";
(function () {
  var IMMINENT = 5 * 60; // seconds: under this a pending schedule is shown orange

  function two(n) { return (n < 10 ? "0" : "") + n; }

  // "45s", "4 min 05s", "2h 30min 05s", "3d 5h": the CLI's countdown, with seconds.
  function countdown(seconds) {
    if (seconds < 0) { return "overdue " + countdown(-seconds); }
    var s = Math.floor(seconds);
    if (s < 60) { return s + "s"; }
    var m = Math.floor(s / 60); s = s % 60;
    if (m < 60) { return m + " min " + two(s) + "s"; }
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 24) { return h + "h " + two(m) + "min " + two(s) + "s"; }
    var d = Math.floor(h / 24); h = h % 24;
    return h ? d + "d " + h + "h" : d + "d";
  }

  function tick() {
    var now = Date.now();
    var cells = document.querySelectorAll(".countdown[data-at]");
    for (var i = 0; i < cells.length; i++) {
      var left = (Date.parse(cells[i].getAttribute("data-at")) - now) / 1000;
      cells[i].textContent = countdown(left);
      cells[i].classList.toggle("soon", left >= 0 && left < IMMINENT);
      cells[i].classList.toggle("overdue", left < 0);
    }
  }

  // Reload the page every data-refresh seconds, unless a form is being filled in.
  var dirty = false;
  function refresh() {
    var every = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
    if (!every) { return; }
    document.addEventListener("input", function () { dirty = true; });
    setInterval(function () {
      var el = document.activeElement;
      var typing = el && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName);
      if (!dirty && !typing && document.visibilityState === "visible") {
        window.location.reload();
      }
    }, every * 1000);
  }

  // Wall-clock parts of a moment in a time zone: {year, month, day, hour, minute, weekday}.
  function partsIn(zone, date) {
    var fmt = new Intl.DateTimeFormat("en-US", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", weekday: "short", hourCycle: "h23"
    });
    var out = {};
    fmt.formatToParts(date).forEach(function (p) { out[p.type] = p.value; });
    return {
      year: +out.year, month: +out.month, day: +out.day, hour: +out.hour % 24,
      minute: +out.minute,
      weekday: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].indexOf(out.weekday)
    };
  }

  function isoDay(year, month, day) { // calendar arithmetic on a date, no zone involved
    var d = new Date(Date.UTC(year, month - 1, day));
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate());
  }

  function zoneOf(job, fallback) {
    var options = document.querySelectorAll("#job-zones option");
    for (var i = 0; i < options.length; i++) {
      if (options[i].value === job) { return options[i].getAttribute("data-zone"); }
    }
    return fallback;
  }

  function scheduleForm() {
    var form = document.getElementById("add-form");
    if (!form) { return; }
    var job = document.getElementById("add-job");
    var date = document.getElementById("add-date");
    var time = document.getElementById("add-time");
    var label = document.getElementById("add-zone");
    var zone = function () { return zoneOf(job.value, label.getAttribute("data-default")); };
    var showZone = function () { label.textContent = zone(); };
    job.addEventListener("input", showZone);
    job.addEventListener("change", showZone);
    var buttons = form.querySelectorAll(".shortcuts button");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener("click", function (event) {
        var b = event.currentTarget;
        var now = partsIn(zone(), new Date());
        var day = isoDay(now.year, now.month, now.day);
        var at = b.getAttribute("data-at");
        if (b.hasAttribute("data-in")) {
          var then = partsIn(zone(), new Date(Date.now() + 60000 * +b.getAttribute("data-in")));
          day = isoDay(then.year, then.month, then.day);
          at = two(then.hour) + ":" + two(then.minute);
        } else if (b.hasAttribute("data-day")) {
          day = isoDay(now.year, now.month, now.day + +b.getAttribute("data-day"));
        } else if (b.hasAttribute("data-weekday")) { // the next one still ahead
          var ahead = (+b.getAttribute("data-weekday") - 1 - now.weekday + 7) % 7;
          var hm = at.split(":");
          if (ahead === 0 && now.hour * 60 + now.minute >= +hm[0] * 60 + +hm[1]) { ahead = 7; }
          day = isoDay(now.year, now.month, now.day + ahead);
        }
        date.value = day;
        time.value = at;
        dirty = true;
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    if (document.querySelector(".countdown[data-at]")) { setInterval(tick, 1000); }
    refresh();
    scheduleForm();
  });
})();
