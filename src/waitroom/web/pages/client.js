// The wait room's page script: polls the same address until the visitor may come in, and says
// where things stand in the page's language. It fills whichever [data-waitroom=…] elements the
// page has (heading, message, place, eta, status, next, back), so a custom template needs no
// script of its own. What it says mirrors web/wording.py (the first render, on the server).
(function () {
  "use strict";
  var source = document.getElementById("waitroom-data");
  if (!source) return;
  var data = JSON.parse(source.textContent);
  var strings = data.strings || {};

  // CLDR cardinal rules for whole numbers, as web/strings.py's PLURAL_RULES.
  function plural(rule, n) {
    var d = n % 10, h = n % 100, few = d >= 2 && d <= 4 && (h < 12 || h > 14);
    switch (rule) {
      case "one_other": return n === 1 ? "one" : "other";
      case "zero_one_other": return n === 0 || n === 1 ? "one" : "other";
      case "polish": return n === 1 ? "one" : few ? "few" : "many";
      case "east_slavic": return d === 1 && h !== 11 ? "one" : few ? "few" : "many";
      case "czech": return n === 1 ? "one" : n >= 2 && n <= 4 ? "few" : "other";
      default: return "other";
    }
  }
  var api = window.waitroom = window.waitroom || {};  // proof.js may have put `solve` there
  api.plural = plural;

  function t(key, values) {
    var text = strings[key];
    values = values || {};
    if (text && typeof text === "object") {
      text = text[plural(data.plural, values.n || 0)] || text.other;
    }
    return String(text || "").replace(/\{([A-Za-z_]+)\}/g, function (all, name) {
      return name in values ? String(values[name]) : all;
    });
  }

  function part(name) { return document.querySelector('[data-waitroom="' + name + '"]'); }
  function show(name, text) {
    var el = part(name);
    if (!el) return;
    if (el.textContent !== text) el.textContent = text;
    el.hidden = !text;
  }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function clock(s) {
    var h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    return h ? h + ":" + two(m) + ":" + two(sec) : m + ":" + two(sec);
  }
  function duration(prefix, s) {
    if (s < 60) return t(prefix + ".soon");
    var minutes = Math.floor(s / 60 + 0.5);
    if (minutes < 120) return t(prefix + ".minutes", { n: minutes });
    return t(prefix + ".hours", { n: Math.floor(s / 3600 + 0.5) });
  }

  var failures = 0, nextAt = 0, timer = 0, opensAt = 0, clockTimer = 0, info = data;
  var proof = "", challenges = 0;  // a solved challenge, sent with each poll until another comes

  // --- a refusal page: count down, then reload (GET) or say the form may be sent again ---------
  if (data.status === "refused") {
    if (typeof data.retry_after !== "number") return;
    var until = Date.now() + data.retry_after * 1000, back = part("back");
    if (back && !data.reload) {
      back.hidden = false;
      back.addEventListener("click", function () { window.history.back(); });
    }
    (function count() {
      var left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      if (data.reload) {
        show("next", t("next_try", { n: left }));
        if (left === 0) { window.location.reload(); return; }
      } else {
        show("next", left ? t("refused.wait", { n: left }) : t("refused.ready"));
        if (left === 0) return;
      }
      setTimeout(count, Math.min(1000, until - Date.now()) || 1000);
    })();
    return;
  }
  if (data.status !== "waiting") return;

  // --- the wait page ---------------------------------------------------------------------------
  function say(text) { show("status", text); }

  // The opening in the visitor's own time: the time alone on that day, else with its date.
  function opening(title) {
    var at = new Date(opensAt), now = new Date(), same = at.toDateString() === now.toDateString();
    var options = same ? { hour: "numeric", minute: "2-digit" }
      : { year: "numeric", month: "long", day: "numeric", hour: "numeric", minute: "2-digit" };
    var time;
    try { time = new Intl.DateTimeFormat(data.lang, options).format(at); }
    catch (e) { time = at.toLocaleString(); }
    return t(same ? "prequeue.heading" : "prequeue.heading_day", { title: title, time: time });
  }

  function countdown() {
    clearTimeout(clockTimer);
    var left = Math.max(0, Math.ceil((opensAt - Date.now()) / 1000));
    show("place", left > 0 ? t("prequeue.countdown", { clock: clock(left) }) : t("prequeue.opening"));
    var rest = (opensAt - Date.now()) % 1000;  // to the next whole second before the opening
    if (left > 0) clockTimer = setTimeout(countdown, rest > 0 ? rest : 1000);
  }

  function eta(state) {
    if (state === "degraded") return "";
    if (state === "paused") return t("eta.paused");
    if (state === "prequeue") {
      var after = info.eta_after_opening_max;
      return typeof after === "number" ? t("prequeue.after", { n: Math.max(1, Math.ceil(after / 60)) }) : "";
    }
    if (!("eta_seconds" in info)) return "";
    if (info.eta_seconds === null) return t("eta.unknown");
    var text = duration(state === "blocked" ? "block" : "eta", Math.max(0, info.eta_seconds));
    return info.past_closing ? text + " " + t("eta.closing") : text;
  }

  // Everything the answer says: heading, message, place and estimate (each poll's answer too).
  function render(next) {
    info = next;
    var state = info.state || (typeof info.position === "number" ? "line" : "blocked");
    var title = info.title || info.room || "";
    clearTimeout(clockTimer);
    if (state === "prequeue" && typeof info.opens_in === "number") {
      opensAt = Date.now() + info.opens_in * 1000;
      show("heading", opening(title));
      show("message", t("prequeue.body", { title: title }));
      countdown();
    } else {
      show("heading", t("wait.heading", { title: title }));
      show("message", t("wait." + state, { title: title }));
      show("place", state === "blocked" ? t("block.no_line")
        : typeof info.position === "number" && state !== "degraded"
          ? t("place.position", { n: info.position + 1 }) : "");
    }
    show("eta", eta(state));
  }

  // A draw of its own for every page: the crypto source, not Math.random, whose state pages can share.
  function random() {
    var c = window.crypto, a = new Uint32Array(1);
    if (c && c.getRandomValues) { c.getRandomValues(a); return a[0] / 4294967296; }
    return Math.random();
  }

  // Spread retries over +/-30% so that visitors who arrived together do not all come back together.
  function schedule(seconds) {
    // ±30 % of the interval, or of the room's head interval (head_retry_after) when this visitor was
    // told a longer one: the store expects it back then, and never later than the head's jitter.
    seconds = Math.max(1, seconds);
    var spread = Math.min(seconds, info.head_retry_after || data.head_retry_after || seconds);
    var delay = (seconds - spread + spread * (0.7 + random() * 0.6)) * 1000;
    nextAt = Date.now() + delay;
    var root = document.documentElement;
    root.setAttribute("data-next-retry", String(Math.round(delay)));
    // The first plan, kept: a test (or a curious reader) can compare it with the first poll later.
    if (!root.hasAttribute("data-first-retry")) root.setAttribute("data-first-retry", String(Math.round(delay)));
    tick();
  }

  function tick() {
    clearTimeout(timer);
    var left = nextAt - Date.now();
    show("next", t("next_try", { n: Math.max(0, Math.ceil(left / 1000)) }));
    if (left <= 0) { poll(); return; }
    timer = setTimeout(tick, Math.min(1000, left));
  }

  function enter() {
    say(t("status.entering"));
    // A GET of the same address (no fragment): never a re-submitted form.
    window.location.replace(window.location.href.split("#")[0]);
  }

  // A room with proof of work: solve the challenge, then ask at once with the answer. A challenge
  // that keeps coming back (the clock, another network) is solved again after a pause.
  function challenged(body) {
    var work = body.proof_of_work || {};
    clearTimeout(timer);
    show("next", "");
    if (!api.solve) { enter(); return; }  // a page without the solver: load the one that has it
    challenges += 1;
    if (challenges > 3) { challenges = 0; trouble(); return; }
    say(t("status.solving"));
    api.solve(String(work.challenge || ""), Number(work.difficulty), function (nonce) {
      if (nonce === null) { proof = ""; trouble(); return; }
      proof = work.challenge + ";" + nonce;
      poll();
    });
  }

  function poll() {
    say(t("status.checking"));
    var headers = { "Accept": "application/json", "Waitroom-Poll": "1" };
    if (proof) headers["Waitroom-Proof"] = proof;
    fetch(window.location.href, {
      method: "GET",
      credentials: "same-origin",
      cache: "no-store",
      headers: headers
    }).then(function (response) {
      return response.json().then(function (body) { return body; }, function () { return {}; })
        .then(function (body) {
          if (body && body.status === "waiting" && body.state === "challenge") {
            failures = 0;
            render(body);
            challenged(body);
          } else if (body && body.status === "waiting") {
            failures = 0;
            challenges = 0;
            render(body);
            say(t(body.state === "prequeue" ? "status.prequeue" : "status.still"));
            schedule(body.retry_after || data.retry_after);
          } else if (response.status >= 500 || response.status === 429) {
            // Not the wait room's answer: something in front of it is failing. Leaving now would
            // strand the visitor on an error page that never retries; stay and ask again.
            trouble();
          } else {
            enter();
          }
        });
    }, trouble);
  }

  function trouble() {
    failures += 1;
    say(t("status.trouble"));
    schedule(Math.min(120, data.retry_after * Math.pow(2, Math.min(failures, 4))));
  }

  render(data);
  if (data.state === "challenge") challenged(data);
  else schedule(data.retry_after);
})();
