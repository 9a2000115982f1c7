// tradebox console: renders the reply model like Slack messages and drives
// the four pages. Vanilla JavaScript, no build step. Every piece of text
// from the server goes into the page as text nodes (never as HTML), so
// output of user code cannot inject markup.
"use strict";

(() => {
  const page = document.body.dataset.page || "console";
  const user = document.body.dataset.user || "console";
  let csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

  // ------------------------------------------------------------ helpers

  // el("div", {class: "x", onclick: f}, child, "text", ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value == null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");
  const clock = (d = new Date()) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const utc = (text) => (text || "").replace("T", " ").replace(/\.\d+$/, "");
  const number = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
  const bytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB`
    : `${(n / 1048576).toFixed(1)} MB`);

  // fetch with the CSRF header on state changes; a stale token (the server
  // restarted) is refreshed once from /console/session.
  async function send(url, options = {}, retried = false) {
    const method = (options.method || "GET").toUpperCase();
    const headers = Object.assign({}, options.headers || {});
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrf;
    const response = await fetch(url, Object.assign({}, options, {
      method, headers, credentials: "same-origin",
    }));
    if (response.status === 403 && !retried && method !== "GET") {
      const body = await response.clone().json().catch(() => ({}));
      if (body.csrf) {
        const session = await fetch("/console/session", { credentials: "same-origin" });
        if (session.ok) {
          csrf = (await session.json()).csrf;
          return send(url, options, true);
        }
      }
    }
    return response;
  }

  async function errorOf(response) {
    const body = await response.json().catch(() => null);
    if (response.status === 401) return "The session has expired: open the link `tradebox serve` printed again.";
    return (body && body.error) || `${response.status} ${response.statusText}`;
  }

  async function getJson(url) {
    const response = await send(url);
    if (!response.ok) throw new Error(await errorOf(response));
    return response.json();
  }

  function postJson(url, body) {
    return send(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  function highlighted(code, className) {
    const pre = el("pre", { class: className });
    if (window.TradeboxEditor) window.TradeboxEditor.highlight(code, pre);
    else pre.textContent = code;
    return pre;
  }

  // ------------------------------------------------------------ mrkdwn

  const EMOJI = {
    x: "❌", white_check_mark: "✅", heavy_check_mark: "✔️", hourglass_flowing_sand: "⏳",
    hourglass: "⌛", warning: "⚠️", no_entry: "⛔", no_entry_sign: "🚫", information_source: "ℹ️",
    bulb: "💡", tada: "🎉", rocket: "🚀", chart_with_upwards_trend: "📈",
    chart_with_downwards_trend: "📉", bar_chart: "📊", mag: "🔍", memo: "📝", zap: "⚡",
    fire: "🔥", eyes: "👀", "+1": "👍", thumbsup: "👍", "-1": "👎", thumbsdown: "👎",
    moneybag: "💰", money_with_wings: "💸", lock: "🔒", key: "🔑", wastebasket: "🗑️",
    floppy_disk: "💾", page_facing_up: "📄", clipboard: "📋", gear: "⚙️", stopwatch: "⏱️",
    robot_face: "🤖", wave: "👋", question: "❓", exclamation: "❗", sparkles: "✨",
    arrow_right: "➡️", repeat: "🔁", calendar: "📅", books: "📚", snake: "🐍",
  };

  // One pattern for every inline element; the first group that matched says which.
  const INLINE = new RegExp([
    "`([^`\\n]+)`",                                          // 1 code
    "<(@[A-Za-z0-9._-]+)>",                                 // 2 user mention
    "<#([A-Za-z0-9]+)(?:\\|([^>]*))?>",                      // 3,4 channel
    "<!(here|channel|everyone)>",                            // 5 special mention
    "<((?:https?|mailto):[^|>\\s]+)(?:\\|([^>]*))?>",        // 6,7 link
    "\\*(?=\\S)([^*\\n]*?\\S)\\*",                           // 8 bold
    "(?<![A-Za-z0-9])_(?=\\S)([^_\\n]*?\\S)_(?![A-Za-z0-9])", // 9 italic
    "~(?=\\S)([^~\\n]*?\\S)~",                               // 10 strike
    ":([a-z0-9_+-]+):",                                      // 11 emoji
    "(\\n)",                                                 // 12 line break
  ].join("|"), "g");

  function inline(text, parent) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1] != null) parent.append(el("code", { class: "md-code", text: m[1] }));
      else if (m[2] != null) parent.append(el("span", { class: "mention", text: m[2] }));
      else if (m[3] != null) parent.append(el("span", { class: "mention", text: `#${m[4] || m[3]}` }));
      else if (m[5] != null) parent.append(el("span", { class: "mention", text: `@${m[5]}` }));
      else if (m[6] != null) {
        parent.append(el("a", { href: m[6], target: "_blank", rel: "noopener noreferrer", text: m[7] || m[6] }));
      } else if (m[8] != null) inline(m[8], parent.appendChild(el("b")));
      else if (m[9] != null) inline(m[9], parent.appendChild(el("i")));
      else if (m[10] != null) inline(m[10], parent.appendChild(el("s")));
      else if (m[11] != null) parent.append(EMOJI[m[11]] || m[0]);
      else if (m[12] != null) parent.append(el("br"));
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  // Slack mrkdwn to DOM: ``` fences, then inline elements.
  function mrkdwn(text) {
    const fragment = document.createDocumentFragment();
    const parts = String(text || "").split("```");
    parts.forEach((part, i) => {
      if (i % 2 === 1 && i < parts.length - 1) {
        fragment.append(el("pre", { class: "b-pre md-pre", text: part.replace(/^\n/, "").replace(/\n$/, "") }));
      } else {
        inline(i % 2 === 1 ? "```" + part : part, fragment);
      }
    });
    return fragment;
  }

  // ------------------------------------------------------------ replies

  function base64Blob(data, mime) {
    const raw = atob(data || "");
    const buffer = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) buffer[i] = raw.charCodeAt(i);
    return new Blob([buffer], { type: mime || "application/octet-stream" });
  }

  function fileUrl(file) {
    if (!file._url) file._url = URL.createObjectURL(base64Blob(file.data, file.mime));
    return file._url;
  }

  function button(b, onAction) {
    return el("button", {
      class: "btn btn-small",
      type: "button",
      "data-action": b.action_id,
      onclick: () => onAction(b),
    }, b.text);
  }

  // The DOM of a reply. `onAction(button)` runs when a button is pressed.
  function renderReply(reply, onAction, placeholder = false) {
    const files = new Map((reply.files || []).map((f) => [f.name, f]));
    const shown = new Set();
    const root = el("div", {
      class: ["reply", reply.error && "is-error", placeholder && "is-placeholder"].filter(Boolean).join(" "),
      "data-kind": placeholder ? "placeholder" : "reply",
    });
    for (const block of reply.blocks || []) {
      switch (block.type) {
        case "header":
          root.append(el("div", { class: "b-header", text: block.text }));
          break;
        case "text": {
          const section = el("div", { class: "b-section" }, el("div", { class: "b-text" }, mrkdwn(block.text)));
          if (block.button) section.append(button(block.button, onAction));
          root.append(section);
          break;
        }
        case "code":
          if (block.label) root.append(el("div", { class: "b-label", text: block.label }));
          root.append(block.label === "Code"
            ? highlighted(block.text, "b-pre b-code")
            : el("pre", { class: "b-pre b-code", text: block.text }));
          break;
        case "result":
          if (block.label) root.append(el("div", { class: "b-label", text: block.label }));
          root.append(el("pre", { class: "b-pre b-result", text: block.text }));
          break;
        case "image": {
          const file = files.get(block.file);
          if (!file) break;
          shown.add(block.file);
          const url = fileUrl(file);
          root.append(el("figure", { class: "b-image" },
            el("img", { src: `data:${file.mime};base64,${file.data}`, alt: block.alt || file.title }),
            el("figcaption", {},
              el("span", { text: file.title || block.alt }),
              el("a", { href: url, download: file.name, text: "Download" }),
              el("a", { href: url, target: "_blank", rel: "noopener", text: "Open" }))));
          break;
        }
        case "context":
          root.append(el("div", { class: "b-context" },
            (block.items || []).map((item) => el("span", {}, mrkdwn(item)))));
          break;
        case "buttons":
          root.append(el("div", { class: "b-actions" }, (block.buttons || []).map((b) => button(b, onAction))));
          break;
        case "divider":
          root.append(el("hr", { class: "b-divider" }));
          break;
        default:
          break;
      }
    }
    for (const file of reply.files || []) {
      if (shown.has(file.name)) continue;
      const ext = (file.name.split(".").pop() || "file").toUpperCase().slice(0, 4);
      root.append(el("div", { class: "b-file" },
        el("div", { class: "b-file-icon", text: ext }),
        el("div", {},
          el("div", {}, el("a", { href: fileUrl(file), download: file.name, text: file.title || file.name })),
          el("div", { class: "b-file-meta", text: `${file.name} · ${bytes(file.size || 0)}` }))));
    }
    if (reply.visibility === "ephemeral" && !placeholder) {
      root.append(el("div", { class: "ephemeral-note" }, "👁", " Only visible to you"));
    }
    return root;
  }

  function errorReply(message) {
    return { visibility: "ephemeral", error: true, files: [], blocks: [{ type: "text", text: `:x: ${message}` }] };
  }

  // Sends a command (`{text}` or `{action_id, value}`) and shows the
  // placeholder, then the final reply, in `target` (replacing its content).
  async function runCommand(body, target, onAction) {
    const show = (reply, placeholder) => target.replaceChildren(renderReply(reply, onAction, placeholder));
    show({ visibility: "in_channel", files: [], blocks: [{ type: "text", text: "Sending…" }] }, true);
    let response;
    try {
      response = await postJson("/console/command", body);
    } catch (e) {
      show(errorReply(`The console server cannot be reached (${e.message}).`));
      return null;
    }
    if (!response.ok) {
      show(errorReply(await errorOf(response)));
      return null;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let final = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.event === "placeholder") show(event.reply, true);
        else if (event.event === "reply") { final = event.reply; show(final, false); }
        else if (event.event === "error") show(errorReply(event.error));
      }
      if (done) break;
    }
    if (!final) show(errorReply("The connection closed before the reply arrived."));
    return final;
  }

  // ------------------------------------------------------------ console page

  function consolePage() {
    const messages = document.getElementById("messages");
    const HISTORY_KEY = "tradebox.history.v1";
    const history = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    let cursor = history.length;
    let draft = "";

    const nearBottom = () => messages.scrollHeight - messages.scrollTop - messages.clientHeight < 120;
    const scroll = () => { messages.scrollTop = messages.scrollHeight; };

    function message({ bot, name, content, at }) {
      const avatar = bot
        ? el("div", { class: "avatar bot" }, el("img", { src: "/assets/favicon.svg", alt: "" }))
        : el("div", { class: "avatar", text: (name || "?").slice(0, 1) });
      const body = el("div", { class: "msg-content" }, content);
      const node = el("div", { class: bot ? "msg msg-bot" : "msg msg-user" }, avatar,
        el("div", { class: "msg-body" },
          el("div", { class: "msg-head" },
            el("span", { class: "msg-name", text: name }),
            bot && el("span", { class: "app-badge", text: "APP" }),
            el("span", { class: "msg-time", text: clock(at ? new Date(at) : undefined) })),
          body));
      messages.append(node);
      scroll();
      return body;
    }

    function typed(text) {
      const match = /^(\/\S+)(\s+)?([\s\S]*)$/.exec(text.trim());
      if (!match) return el("div", { class: "cmd-line", text });
      const [, command, , rest] = match;
      if (command === "/analyze" && rest) {
        return el("div", {}, el("div", { class: "cmd-line" }, el("span", { class: "cmd-name", text: command })),
          highlighted(rest, "b-pre cmd-code"));
      }
      if (rest.includes("\n")) {
        return el("div", {}, el("div", { class: "cmd-line" }, el("span", { class: "cmd-name", text: command })),
          el("pre", { class: "b-pre cmd-code", text: rest }));
      }
      return el("div", { class: "cmd-line" }, el("span", { class: "cmd-name", text: command }), rest ? ` ${rest}` : "");
    }

    async function execute(body, shownAs) {
      const stick = nearBottom();
      message({ bot: false, name: user, content: shownAs });
      const target = message({ bot: true, name: "tradebox", content: null });
      // Kept by the server, so the conversation survives a page switch or a reload.
      await runCommand({ ...body, keep: true }, target, onAction);
      if (stick) scroll();
    }

    function pressed(label, actionId, value) {
      const name = value || actionId.replace(/^run_func_/, "");
      return el("div", { class: "cmd-line" }, "▶ pressed ", el("b", { text: label }), " on ",
        el("code", { class: "md-code", text: name }));
    }

    function onAction(b) {
      execute({ action_id: b.action_id, value: b.value, label: b.text },
        pressed(b.text, b.action_id, b.value));
    }

    // The conversation so far (kept by the server while it runs), under the welcome.
    async function restore() {
      let data;
      try {
        data = await getJson("/console/conversation");
      } catch {
        messages.dataset.restored = "failed";
        return; // nothing to show again; new commands still work
      }
      for (const entry of data.entries || []) {
        const sent = entry.sent || {};
        message({
          bot: false, name: user, at: entry.at,
          content: sent.kind === "button" ? pressed(sent.label, sent.action_id, sent.value) : typed(sent.text || ""),
        });
        message({ bot: true, name: "tradebox", at: entry.at, content: renderReply(entry.reply, onAction) });
      }
      messages.dataset.restored = String((data.entries || []).length);
      scroll();
    }

    document.getElementById("clear-conversation").addEventListener("click", async () => {
      const response = await send("/console/conversation", { method: "DELETE" });
      if (!response.ok) return;
      for (const node of [...messages.querySelectorAll(".msg")].slice(1)) node.remove(); // keep the welcome
      editor.focus();
    });

    function submit(text) {
      const line = text.trim();
      if (!line) return;
      if (history[history.length - 1] !== text) history.push(text);
      while (history.length > 200) history.shift();
      localStorage.setItem(HISTORY_KEY, JSON.stringify(history));
      cursor = history.length;
      draft = "";
      editor.setValue("");
      execute({ text }, typed(text));
    }

    function walk(direction, current) {
      if (!history.length) return null;
      if (cursor === history.length) draft = current;
      const next = cursor + direction;
      if (next < 0 || next > history.length) return null;
      cursor = next;
      return cursor === history.length ? draft : history[cursor];
    }

    const editor = window.TradeboxEditor.create({
      parent: document.getElementById("editor"),
      placeholder: "/analyze result = load_trades(days=None).groupby('exchange')['amount'].sum()",
      onSubmit: submit,
      onHistory: walk,
      label: "Command",
    });
    window.tradebox.editor = editor;
    document.getElementById("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      submit(editor.getValue());
      editor.focus();
    });

    const examples = [
      "/analyze result = load_trades(days=None).groupby('exchange')['amount'].sum()",
      "/analyze df = load_trades(days=None, asset='ALKIMI')\nax = df.set_index('timestamp')['price'].plot(title='ALKIMI price')\nresult = f'{len(df)} ALKIMI trades'",
      "/listfuncs",
      "/tradebox help",
    ];
    message({
      bot: true,
      name: "tradebox",
      content: el("div", { class: "reply" },
        el("div", { class: "b-text" }, mrkdwn(
          `:wave: Commands run as <@${user}> in the sandbox, against a read-only snapshot of the trades. ` +
          "Results come back like Slack messages: tables, charts, *Run* buttons. Try one:")),
        el("div", { class: "welcome-examples" }, examples.map((x) => el("button", {
          type: "button",
          class: "example",
          text: x,
          onclick: () => { editor.setValue(x); editor.focus(); },
        })))),
    });
    restore();
    editor.focus();
  }

  // ------------------------------------------------------------ functions page

  function functionsPage() {
    const list = document.getElementById("fn-list");
    const detail = document.getElementById("fn-detail");
    const search = document.getElementById("fn-search");
    const stats = document.getElementById("fn-stats");
    let selected = new URLSearchParams(location.search).get("name");
    let timer = null;

    async function load() {
      const q = search.value.trim();
      let data;
      try {
        data = await getJson(`/api/v1/functions?limit=500${q ? `&q=${encodeURIComponent(q)}` : ""}`);
      } catch (e) {
        list.replaceChildren(el("li", { class: "empty", text: e.message }));
        return;
      }
      stats.textContent = `${number(data.stats.total_functions)} functions · ${number(data.stats.total_uses)} executions` +
        (q ? ` · ${number(data.total)} matching “${q}”` : "");
      list.replaceChildren(...data.functions.map((f) => el("li", {
        class: `fn-item${f.name === selected ? " selected" : ""}`,
        "data-name": f.name,
        onclick: () => select(f.name),
      },
      el("div", { class: "fn-name", text: f.name }),
      el("div", { class: "fn-desc", text: f.description || "no description" }),
      el("div", { class: "fn-meta", text: `@${f.created_by} · used ${f.use_count}× · v${f.version}` }))));
      if (!data.functions.length) {
        list.replaceChildren(el("li", { class: "empty" }, q ? "No function matches." : "No saved functions yet. Save one in the console with /savefunc name | description | code"));
      }
    }

    async function select(name) {
      selected = name;
      history.replaceState(null, "", `/functions?name=${encodeURIComponent(name)}`);
      for (const item of list.children) item.classList.toggle("selected", item.dataset.name === name);
      let data;
      try {
        data = await getJson(`/api/v1/functions/${encodeURIComponent(name)}`);
      } catch (e) {
        detail.replaceChildren(el("div", { class: "empty", text: e.message }));
        return;
      }
      const f = data.function;
      const output = el("div", { class: "fn-output", id: "fn-output" });
      const codeBox = el("div", {});
      const note = el("div", { class: "version-note" });
      const showVersion = (v) => {
        note.textContent = v ? `Showing version ${v.version} (${v.action} by @${v.saved_by}, ${utc(v.saved_at)} UTC)` : "";
        codeBox.replaceChildren(highlighted(v ? v.code : f.code, "b-pre fn-code"));
      };
      const meta = el("div", { class: "b-context" });
      const showMeta = (fn) => meta.replaceChildren(
        el("span", {}, "Created by ", el("span", { class: "mention", text: `@${fn.created_by}` })),
        el("span", { text: `${utc(fn.created_at)} UTC` }),
        el("span", { text: `Used ${fn.use_count}×` }),
        fn.last_used && el("span", { text: `last ${utc(fn.last_used)} UTC` }),
        el("span", { text: `Version ${fn.version}` }));
      const refresh = async () => {
        await load();
        const now = await getJson(`/api/v1/functions/${encodeURIComponent(name)}`).catch(() => null);
        if (now && now.function) showMeta(now.function);
      };
      const runButton = el("button", {
        class: "btn btn-primary", type: "button", id: "fn-run",
        onclick: () => runCommand({ action_id: `run_func_${name}`, value: name }, output, onAction).then(refresh),
      }, "Run");
      let armed = null;
      const deleteButton = el("button", {
        class: "btn btn-danger", type: "button", id: "fn-delete",
        onclick: async () => {
          if (!armed) {
            deleteButton.textContent = "Click again to delete";
            deleteButton.classList.add("confirm");
            armed = setTimeout(() => {
              armed = null;
              deleteButton.textContent = "Delete";
              deleteButton.classList.remove("confirm");
            }, 5000);
            return;
          }
          clearTimeout(armed);
          const reply = await runCommand({ text: `/delfunc ${name}` }, output, onAction);
          await load();
          if (reply && !reply.error) {
            runButton.disabled = true;
            deleteButton.disabled = true;
            deleteButton.textContent = "Deleted";
          }
        },
      }, "Delete");
      const versions = el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ["Version", "Change", "By", "When (UTC)", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, data.history.slice().reverse().map((v) => el("tr", {},
          el("td", { text: `v${v.version}` }),
          el("td", { text: v.action }),
          el("td", { text: `@${v.saved_by}` }),
          el("td", { class: "mono", text: utc(v.saved_at) }),
          el("td", {}, el("button", { class: "btn btn-small", type: "button", onclick: () => showVersion(v) }, "View"))))));
      if (!f) {
        detail.replaceChildren(
          el("div", { class: "fn-title" }, el("h2", { text: name }), el("span", { class: "badge error", text: "deleted" })),
          el("h2", { text: "History" }), el("div", { class: "table-wrap" }, versions), note, codeBox);
        showVersion(data.history[data.history.length - 1]);
        return;
      }
      detail.replaceChildren(
        el("div", { class: "fn-title" }, el("h2", { text: f.name }), el("span", { class: "spacer" }), runButton, deleteButton),
        el("p", {}, f.description ? mrkdwn(f.description) : el("i", { class: "muted", text: "no description" })),
        meta,
        output,
        el("h2", { text: "Code" }), note, codeBox,
        el("h2", { text: "Versions" }), el("div", { class: "table-wrap" }, versions));
      showMeta(f);
      showVersion(null);
    }

    function onAction(b) {
      const name = b.value || b.action_id.replace(/^run_func_/, "");
      select(name).then(() => {
        const output = document.getElementById("fn-output");
        if (output) runCommand({ action_id: b.action_id, value: b.value }, output, onAction).then(load);
      });
    }

    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(load, 200);
    });
    load().then(() => { if (selected) select(selected); });
  }

  // ------------------------------------------------------------ audit page

  function outcomeClass(outcome) {
    if (outcome === "ok") return "ok";
    if (outcome === "error" || outcome === "timeout") return "error";
    if (outcome.startsWith("refused")) return "refused";
    return "";
  }

  function auditPage() {
    const form = document.getElementById("audit-filters");
    const body = document.querySelector("#audit-table tbody");
    const count = document.getElementById("audit-count");
    const users = document.getElementById("audit-users");
    const params = new URLSearchParams(location.search);
    for (const name of ["user", "outcome", "action", "limit"]) {
      if (params.get(name)) form.elements[name].value = params.get(name);
    }
    let filled = false;

    function fillSelect(select, names) {
      const current = select.value || params.get(select.name) || "";
      select.replaceChildren(el("option", { value: "", text: "any" }),
        ...names.map((n) => el("option", { value: n, text: n.replace(/_/g, " ") })));
      select.value = current;
    }

    async function load() {
      const query = new URLSearchParams();
      for (const name of ["user", "outcome", "action", "limit"]) {
        const value = form.elements[name].value.trim();
        if (value) query.set(name, value);
      }
      history.replaceState(null, "", `/audit${query.toString() ? `?${query}` : ""}`);
      let data;
      try {
        data = await getJson(`/api/v1/audit?${query}`);
      } catch (e) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty", text: e.message })));
        return;
      }
      if (!filled) {
        fillSelect(form.elements.outcome, data.outcomes);
        fillSelect(form.elements.action, data.actions);
        filled = true;
      }
      const names = new Set([user, ...data.entries.map((e) => e.user_id)]);
      users.replaceChildren(...[...names].sort().map((n) => el("option", { value: n })));
      count.textContent = `${number(data.count)} ${data.count === 1 ? "entry" : "entries"}`;
      if (!data.entries.length) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty", text: "No entries match." })));
        return;
      }
      body.replaceChildren(...data.entries.map((e) => {
        const row = el("tr", { class: "entry", "data-outcome": e.outcome },
          el("td", { class: "mono", text: utc(e.at) }),
          el("td", {}, el("span", { class: "mention", text: `@${e.user_id}` })),
          el("td", { text: e.source }),
          el("td", { text: e.action.replace(/_/g, " ") }),
          el("td", { class: "mono", text: e.function_name ? `${e.function_name}${e.function_version ? ` v${e.function_version}` : ""}` : "" }),
          el("td", {}, el("span", { class: `badge ${outcomeClass(e.outcome)}`, text: e.outcome.replace(/_/g, " ") })),
          el("td", { class: "num", text: e.duration_ms == null ? "" : `${number(e.duration_ms)} ms` }),
          el("td", { class: "detail", text: [e.error_type, e.detail].filter(Boolean).join(": ") }));
        row.addEventListener("click", () => {
          const next = row.nextElementSibling;
          if (next && next.classList.contains("expanded")) { next.remove(); return; }
          const parts = [];
          if (e.channel) parts.push(el("div", { class: "muted", text: `channel ${e.channel}` }));
          if (e.detail || e.error_type) parts.push(el("pre", { class: "b-pre", text: [e.error_type, e.detail].filter(Boolean).join(": ") }));
          if (e.code) parts.push(highlighted(e.code, "b-pre"));
          if (!parts.length) parts.push(el("span", { class: "muted", text: "Nothing more recorded." }));
          row.after(el("tr", { class: "expanded" }, el("td", { colspan: 8 }, parts)));
        });
        return row;
      }));
    }

    form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
    for (const select of form.querySelectorAll("select")) select.addEventListener("change", load);
    load();
  }

  // ------------------------------------------------------------ data page

  function dataPage() {
    const cards = document.getElementById("data-cards");
    const accounts = document.querySelector("#data-accounts tbody");
    const form = document.getElementById("import-form");
    const files = document.getElementById("import-files");
    const results = document.getElementById("import-results");

    const card = (label, value, note) => el("div", { class: "card" },
      el("div", { class: "card-label", text: label }),
      el("div", { class: "card-value", text: value }),
      el("div", { class: "card-note", text: note || "" }));

    const days = (a, b) => {
      if (!a || !b) return "";
      const d = Math.round((Date.parse(`${utc(b).slice(0, 10)}T00:00:00Z`) - Date.parse(`${utc(a).slice(0, 10)}T00:00:00Z`)) / 86400000) + 1;
      return Number.isFinite(d) ? `${d} days` : "";
    };

    async function load() {
      let d;
      try {
        d = await getJson("/api/v1/data");
      } catch (e) {
        cards.replaceChildren(el("div", { class: "empty", text: e.message }));
        return;
      }
      const exchanges = Object.keys(d.by_exchange || {});
      cards.replaceChildren(
        card("Trades", number(d.trades), exchanges.length ? `${exchanges.length} exchanges: ${exchanges.join(", ")}` : "none yet"),
        card("Date range", d.first_trade ? days(d.first_trade, d.last_trade) : "–",
          d.first_trade ? `${d.first_trade.slice(0, 10)} → ${d.last_trade.slice(0, 10)}` : "import trades below"),
        card("Balance snapshots", number(d.snapshots),
          d.first_snapshot ? `${d.first_snapshot.slice(0, 10)} → ${d.last_snapshot.slice(0, 10)}` : "none yet"),
        card("Snapshot", d.snapshot ? `v${d.snapshot.version}` : "none",
          d.snapshot ? `${number(d.snapshot.trades)} trades, made ${utc(d.snapshot.created_at).slice(0, 16)} UTC` : "the sandbox has no data yet"),
        // Followed sources ([[data.sources]]): last sync, lag and errors.
        ...(d.sources || []).map((s) => card(`Source ${s.id}`,
          s.error ? "failing" : s.lag_seconds == null ? "never synced" : `synced ${Math.round(s.lag_seconds)} s ago`,
          s.error ? `${s.error} (${s.failures} in a row)`
            : `${s.kind}: ${number(s.added_total)} added` + (s.newest_trade ? `, newest ${utc(s.newest_trade).slice(0, 16)} UTC` : "") +
              (s.rejected ? `; last refused: ${s.rejected}` : ""))));
      accounts.replaceChildren(...(d.accounts || []).map((a) => el("tr", {},
        el("td", { text: a.exchange }),
        el("td", { text: a.account_name }),
        el("td", { class: "num", text: number(a.trades) }),
        el("td", { class: "mono", text: utc(a.first_trade) }),
        el("td", { class: "mono", text: utc(a.last_trade) }))));
      if (!(d.accounts || []).length) {
        accounts.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "empty", text: "No trades yet." })));
      }
    }

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      for (const file of files.files) {
        const query = new URLSearchParams({ name: file.name });
        for (const key of ["exchange", "account"]) {
          const value = form.elements[key].value.trim();
          if (value) query.set(key, value);
        }
        const item = el("li", { text: `Importing ${file.name} (${bytes(file.size)})…` });
        results.prepend(item);
        try {
          const response = await send(`/api/v1/data/import?${query}`, {
            method: "POST",
            headers: { "Content-Type": "application/octet-stream" },
            body: file,
          });
          if (response.ok) {
            const r = await response.json();
            item.replaceChildren(mrkdwn(`:white_check_mark: ${r.message}`));
          } else {
            item.className = "failed";
            const message = await errorOf(response);
            item.replaceChildren(mrkdwn(`:x: ${message.startsWith(file.name) ? "" : `${file.name}: `}${message}`));
          }
        } catch (err) {
          item.className = "failed";
          item.replaceChildren(mrkdwn(`:x: ${file.name}: ${err.message}`));
        }
      }
      button.disabled = false;
      form.reset();
      load();
    });
    load();
  }

  // ------------------------------------------------------------ start

  // For tests and curious users.
  window.tradebox = { mrkdwn, renderReply };

  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === page));
  const section = document.querySelector(`.page[data-for="${page}"]`);
  if (section) section.hidden = false;
  document.title = page === "console" ? "tradebox" : `${page[0].toUpperCase()}${page.slice(1)} · tradebox`;
  ({ console: consolePage, functions: functionsPage, audit: auditPage, data: dataPage })[page]?.();
})();
