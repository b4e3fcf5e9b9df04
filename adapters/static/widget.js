/* Deskmate chat widget: <script src="https://HOST/widget.js" data-site="KEY" async></script>
   Everything lives in an open shadow root, styled by a constructed stylesheet (no
   inline styles, so a strict Content-Security-Policy that allows this script's origin
   in script-src and connect-src is enough). A page whose origin the site does not
   list gets nothing: the server refuses it, and the widget draws no button. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src || !window.fetch || !window.ShadowRoot) return;
  var base = new URL(script.src).origin;
  var site = script.getAttribute("data-site") || "";
  var user = script.getAttribute("data-user") || "";
  var userHash = script.getAttribute("data-user-hash") || "";
  var language = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
  var storeKey = "deskmate:" + site + ":" + (user ? "user:" + user : "visitor");
  var POLL_MS = 3000;
  var MAX_KEPT = 200;

  function load(name, fallback) {
    try {
      var raw = window.localStorage.getItem(storeKey + ":" + name);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (_) { return fallback; }
  }
  function keep(name, value) {
    try { window.localStorage.setItem(storeKey + ":" + name, JSON.stringify(value)); } catch (_) { /* private mode */ }
  }
  function newId() {
    var bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  var visitor = user ? "" : load("visitor", "");
  function headers(json) {
    var h = {"X-Deskmate-Language": language};
    if (json) h["Content-Type"] = "application/json";
    if (user) { h["X-Deskmate-User"] = user; h["X-Deskmate-User-Hash"] = userHash; }
    else if (visitor) h["X-Deskmate-Visitor"] = visitor;
    return h;
  }
  function api(route) { return base + "/widget/api/" + route + "?site=" + encodeURIComponent(site); }
  function remember(response) {
    var issued = response.headers.get("X-Deskmate-Visitor");
    if (issued && !user) { visitor = issued; keep("visitor", issued); }
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs) if (Object.prototype.hasOwnProperty.call(attrs, name)) node.setAttribute(name, attrs[name]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  var CSS = [
    ":host{all:initial;position:fixed;bottom:20px;z-index:2147483000;font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d1d1f}",
    ":host(.left){left:20px}:host(.right){right:20px}",
    "*{box-sizing:border-box}",
    ".launcher{width:56px;height:56px;border-radius:50%;border:0;background:var(--accent);color:#fff;cursor:pointer;box-shadow:0 4px 14px #0004;display:grid;place-items:center;position:relative}",
    ".launcher svg{width:26px;height:26px;fill:currentColor}",
    ".launcher .dot{position:absolute;top:4px;right:4px;width:12px;height:12px;border-radius:50%;background:#e5484d;border:2px solid #fff}",
    "button:focus-visible,textarea:focus-visible,input:focus-visible{outline:3px solid var(--accent);outline-offset:2px}",
    ".panel{position:absolute;bottom:70px;width:min(370px,calc(100vw - 40px));height:min(560px,calc(100vh - 110px));background:#fff;border-radius:14px;box-shadow:0 8px 30px #0003;display:flex;flex-direction:column;overflow:hidden}",
    ":host(.right) .panel{right:0}:host(.left) .panel{left:0}",
    ".panel[hidden]{display:none}",
    "header{background:var(--accent);color:#fff;padding:12px 14px;display:flex;align-items:center;justify-content:space-between;gap:8px}",
    "h2{font-size:16px;margin:0;font-weight:600}",
    "header button{background:none;border:0;color:#fff;font-size:22px;line-height:1;cursor:pointer;padding:2px 6px;border-radius:6px}",
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f6f7f9}",
    ".msg{max-width:85%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere}",
    ".user{align-self:flex-end;background:var(--accent);color:#fff}",
    ".bot,.agent{align-self:flex-start;background:#fff;border:1px solid #e3e5e8}",
    ".pending::after{content:'\\258D';animation:b 1s steps(2) infinite}@keyframes b{50%{opacity:0}}",
    ".error{align-self:center;color:#b42318;font-size:13px;text-align:center}",
    ".choices{align-self:flex-start;display:flex;flex-wrap:wrap;gap:6px}",
    ".choices button,.human{font:inherit;font-size:13px;border:1px solid var(--accent);color:var(--accent);background:#fff;border-radius:999px;padding:3px 10px;cursor:pointer}",
    ".choices button:disabled{opacity:.5;cursor:default}",
    ".tools{padding:6px 12px 0;display:flex;justify-content:flex-end;background:#fff}",
    "form{display:flex;gap:8px;padding:10px 12px;border-top:1px solid #e3e5e8;background:#fff}",
    "textarea,input{flex:1;font:inherit;resize:none;padding:7px 9px;border-radius:8px;border:1px solid #c9ccd1;color:inherit;background:#fff}",
    "form button{font:inherit;border:0;border-radius:8px;padding:0 14px;background:var(--accent);color:#fff;cursor:pointer}",
    "form button:disabled{opacity:.5;cursor:default}",
    ".email{flex-direction:column;align-items:stretch}.email p{margin:0 0 6px;font-size:13px}.email div{display:flex;gap:8px}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}"
  ].join("\n");

  function start(config) {
    var texts = config.texts || {};
    var color = /^#[0-9a-fA-F]{6}$/.test(config.color) ? config.color : "#2f6fde";
    var host = el("div", {"data-deskmate-widget": site});
    host.className = config.position === "left" ? "left" : "right";
    var root = host.attachShadow({mode: "open"});
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(":host{--accent:" + color + "}\n" + CSS);
    root.adoptedStyleSheets = [sheet];

    var launcher = el("button", {type: "button", "class": "launcher", "aria-expanded": "false", "aria-controls": "deskmate-panel", "aria-label": texts.open || "Open chat"});
    var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    svg.appendChild(path);
    launcher.appendChild(svg);
    var panel = el("section", {id: "deskmate-panel", "class": "panel", role: "dialog", "aria-label": config.title || "Chat"});
    panel.hidden = true;
    var header = el("header");
    var title = el("h2", {}, config.title || "Chat");
    var close = el("button", {type: "button", "aria-label": texts.close || "Close chat"}, "\u00d7");
    header.append(title, close);
    var log = el("div", {"class": "log", role: "log", "aria-live": "polite", "aria-label": texts.conversation || "Conversation", tabindex: "0"});
    var tools = el("div", {"class": "tools"});
    var human = el("button", {type: "button", "class": "human"}, texts.human || "Talk to a person");
    tools.appendChild(human);
    var form = el("form");
    var label = el("label", {"class": "sr", "for": "deskmate-text"}, texts.input || "Your message");
    var input = el("textarea", {id: "deskmate-text", rows: "2", placeholder: texts.placeholder || "", maxlength: String(config.max_chars || 4000)});
    var send = el("button", {type: "submit"}, texts.send || "Send");
    form.append(label, input, send);
    panel.append(header, log, tools, form);
    root.append(panel, launcher);
    document.body.appendChild(host);

    var transcript = load("log", []);
    var busy = false;

    function scroll() { log.scrollTop = log.scrollHeight; }
    function bubble(kind, text) {
      var div = el("div", {"class": "msg " + kind}, text);
      log.appendChild(div);
      scroll();
      return div;
    }
    function record(kind, text) {
      transcript.push({kind: kind, text: text});
      if (transcript.length > MAX_KEPT) transcript = transcript.slice(-MAX_KEPT);
      keep("log", transcript);
    }
    function say(kind, text) { bubble(kind, text); record(kind, text); }
    function problem(text) { log.appendChild(el("div", {"class": "error", role: "alert"}, text)); scroll(); }
    function choices(buttons) {
      if (!Array.isArray(buttons) || !buttons.length) return;
      var group = el("div", {"class": "choices", role: "group"});
      buttons.forEach(function (b) {
        if (typeof b.label !== "string" || typeof b.command !== "string") return;
        var button = el("button", {type: "button", title: b.command}, b.label);
        button.addEventListener("click", function () {
          if (busy) return;
          group.querySelectorAll("button").forEach(function (x) { x.disabled = true; });
          ask(b.command, "chat", b.label);
        });
        group.appendChild(button);
      });
      log.appendChild(group);
      scroll();
    }

    function setOpen(open, quiet) {
      panel.hidden = !open;
      launcher.setAttribute("aria-expanded", String(open));
      launcher.setAttribute("aria-label", open ? (texts.close || "Close chat") : (texts.open || "Open chat"));
      var dot = launcher.querySelector(".dot");
      if (open && dot) dot.remove();
      if (open) scroll();
      if (quiet) return;
      if (open) input.focus(); else launcher.focus();
    }
    launcher.addEventListener("click", function () { setOpen(panel.hidden); });
    close.addEventListener("click", function () { setOpen(false); });
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); setOpen(false); }
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = input.value.trim();
      if (!text || busy) return;
      input.value = "";
      ask(text, "chat");
    });
    human.addEventListener("click", function () { if (!busy) ask("/human", "chat", human.textContent); });

    function emailForm() {
      if (root.querySelector(".email")) return;
      var box = el("form", {"class": "email"});
      var prompt = el("p", {id: "deskmate-email-prompt"}, texts.email_prompt || "");
      var row = el("div");
      var field = el("input", {type: "email", required: "", autocomplete: "email", "aria-label": texts.email_label || "Email", "aria-describedby": "deskmate-email-prompt"});
      var go = el("button", {type: "submit"}, texts.email_send || "Send");
      row.append(field, go);
      box.append(prompt, row);
      panel.insertBefore(box, form);
      field.focus();
      box.addEventListener("submit", function (event) {
        event.preventDefault();
        if (busy || !field.value.trim()) return;
        ask(field.value.trim(), "email").then(function (ok) { if (ok) { box.remove(); input.focus(); } });
      });
    }

    function readEvents(response, onEvent) {
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (part) {
          if (part.done) return;
          buffer += decoder.decode(part.value, {stream: true});
          var end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            var block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            var name = "message", data = "";
            block.split("\n").forEach(function (line) {
              if (line.indexOf("event: ") === 0) name = line.slice(7);
              else if (line.indexOf("data: ") === 0) data += line.slice(6);
            });
            try { onEvent(name, JSON.parse(data)); } catch (_) { /* a malformed event is skipped */ }
          }
          return pump();
        });
      }
      return pump();
    }

    // One question (or the email address left for the team) and its streamed answer.
    function ask(text, route, shownAs) {
      busy = true;
      send.disabled = true;
      say("user", shownAs || text);
      var shown = [];
      var buttons = [];
      var ok = false;
      var body = route === "email" ? {email: text, message_id: newId()} : {text: text, message_id: newId()};
      return fetch(api(route), {method: "POST", headers: headers(true), body: JSON.stringify(body)})
        .then(function (response) {
          remember(response);
          if (!response.ok) {
            return response.json().catch(function () { return {}; }).then(function (b) {
              throw new Error(b.error || texts.unreachable || "HTTP " + response.status);
            });
          }
          ok = true;
          return readEvents(response, function (name, data) {
            if (name === "text") {
              var div = shown[data.n];
              if (!div) { div = shown[data.n] = bubble("bot pending", ""); }
              // A form feed takes back what was shown before it.
              var t = String(data.text);
              div.textContent = t.slice(t.lastIndexOf("\f") + 1);
              scroll();
            } else if (name === "done") buttons = data.buttons || [];
          });
        })
        .catch(function (err) { problem(err.message || texts.unreachable); ok = false; })
        .then(function () {
          if (text === "/forget" && ok) { transcript = []; keep("log", transcript); }
          shown.forEach(function (div) { div.classList.remove("pending"); if (div.textContent) record("bot", div.textContent); });
          choices(buttons);
          busy = false;
          send.disabled = false;
          if (text === "/human" && ok && !config.open) emailForm();
          return ok;
        });
    }

    function poll() {
      if (!user && !visitor) return;
      fetch(api("outbox"), {headers: headers(false)})
        .then(function (r) { return r.ok ? r.json() : {entries: []}; })
        .then(function (body) {
          (body.entries || []).forEach(function (entry) {
            say("agent", entry.text);
            choices(entry.buttons);
            if (panel.hidden && !launcher.querySelector(".dot")) launcher.appendChild(el("span", {"class": "dot", "aria-hidden": "true"}));
          });
        })
        .catch(function () { /* the server is restarting: next tick */ });
    }

    if (config.greeting) bubble("bot", config.greeting);
    if (transcript.length) transcript.forEach(function (m) { bubble(m.kind, m.text); });
    else if (user || visitor) {
      // Nothing kept here (a signed-in user's other device): the stored conversation.
      fetch(api("history"), {headers: headers(false)})
        .then(function (r) { return r.ok ? r.json() : {messages: []}; })
        .then(function (body) {
          (body.messages || []).forEach(function (m) { say(m.role === "user" ? "user" : "bot", m.text); });
        })
        .catch(function () { /* the panel starts empty */ });
    }
    poll();
    setInterval(poll, POLL_MS);
    // A panel left open stays open on the next page, without taking the page's focus.
    if (load("open", false)) setOpen(true, true);
    launcher.addEventListener("click", function () { keep("open", !panel.hidden); });
    close.addEventListener("click", function () { keep("open", false); });
  }

  fetch(api("config"), {headers: headers(false)})
    .then(function (response) { return response.ok ? response.json() : null; })
    .then(function (config) {
      if (!config) return;
      if (config.visitor && !user) { visitor = config.visitor; keep("visitor", visitor); }
      if (document.body) start(config);
      else document.addEventListener("DOMContentLoaded", function () { start(config); });
    })
    .catch(function () { /* origin not allowed or server away: no widget */ });
})();
