// Rendering: a tiny element builder (text is always set as text, never
// parsed as HTML, so nothing a config file or SMTP server says can inject
// markup) and the views built from /v1/console/state.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// "5 s ago", "3 min ago", "2 h ago", "4 d ago".
export function age(atUnix, nowUnix = Date.now() / 1000) {
  const s = Math.max(0, Math.round(nowUnix - atUnix));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// A span whose text the page's ticker keeps current.
export function ageSpan(atUnix) {
  return h("time", {
    class: "age",
    "data-at": atUnix,
    datetime: new Date(atUnix * 1000).toISOString(),
    title: new Date(atUnix * 1000).toISOString(),
    text: age(atUnix),
  });
}

export function refreshAges(root = document) {
  for (const el of root.querySelectorAll("time.age[data-at]")) {
    el.textContent = age(Number(el.dataset.at));
  }
}

export function classBadge(cls) {
  const ok = cls === "accepted";
  return h("span", { class: `class ${ok ? "ok" : "bad"}`, "data-class": cls, text: cls });
}

const STAGES = {
  config: "config", dns: "DNS", connect: "TCP connect", banner: "banner", ehlo: "EHLO",
  starttls: "STARTTLS", tls: "TLS", auth: "AUTH", mail_from: "MAIL FROM", rcpt_to: "RCPT TO",
  data: "DATA", quit: "QUIT", rset: "RSET",
};

export function stageName(stage) {
  return STAGES[stage] || stage;
}

// The most recent of a connection's last check and last test.
export function lastOutcome(c) {
  const items = [];
  if (c.last_check) items.push({ what: "check", ...c.last_check });
  if (c.last_test) items.push({ what: "test", ...c.last_test });
  items.sort((a, b) => b.at_unix - a.at_unix);
  return items[0] || null;
}

function statusCell(c) {
  const last = lastOutcome(c);
  if (!last) return h("span", { class: "muted", text: "not checked yet" });
  const cl = last.report.classification || {};
  return h("div", { class: "status" },
    h("div", {}, classBadge(cl.class), " ", h("span", { class: "muted" }, `${last.what} · `, ageSpan(last.at_unix))),
    cl.class !== "accepted" && cl.hint ? h("div", { class: "hint", text: cl.hint }) : null);
}

function provider(p) {
  return [h("span", { text: p.id }), p.version ? h("span", { class: "muted", text: ` ${p.version}` }) : null];
}

// The connections table; on a phone each row becomes a card (CSS).
export function connectionsView(state, actions) {
  if (!state.connections.length) {
    const invalid = state.status.files?.invalid || 0;
    return h("div", { class: "state empty" },
      h("p", { class: "big", text: "No connections are live." }),
      h("p", {}, invalid
        ? `${invalid} file(s) of the configuration are invalid; see Config health.`
        : "Add a connection file (kind: Connection) to the config directory, or build one with New connection."));
  }
  const headers = ["Connection", "Provider", "Server", "From", "Workspaces", "Source", "Status", "Actions"];
  return h("table", { class: "connections" },
    h("caption", { class: "sr-only", text: "Email delivery connections" }),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, state.connections.map((c) => {
      const id = c.name;
      const src = `${c.source.file}:${c.source.line}`;
      return h("tr", { "data-connection": id },
        h("th", { scope: "row", "data-label": "Connection" },
          h("div", { class: "display", text: c.display_name }),
          h("code", { class: "name", text: c.name })),
        h("td", { "data-label": "Provider", class: "provider" }, provider(c.provider)),
        h("td", { "data-label": "Server" },
          h("code", { class: "server", text: `${c.smtp.host}:${c.smtp.port}` }), " ",
          h("span", { class: `security sec-${c.smtp.security}`, text: c.smtp.security })),
        h("td", { "data-label": "From", class: "from" },
          c.from.name ? h("div", { text: c.from.name }) : null,
          h("div", { class: "muted", text: c.from.email })),
        h("td", { "data-label": "Workspaces", class: "workspaces" },
          c.workspaces.length ? c.workspaces.map((w) => h("span", { class: "chip", text: w })) : h("span", { class: "muted", text: "none" })),
        h("td", { "data-label": "Source" }, h("code", { class: "source", text: src })),
        h("td", { "data-label": "Status", class: "live-status" }, statusCell(c)),
        h("td", { "data-label": "Actions" }, h("div", { class: "actions" },
          h("button", { type: "button", id: `act-test-${id}`, "data-action": "test", class: "primary", onclick: () => actions.test(id), text: "Send Test Email" }),
          h("button", { type: "button", id: `act-check-${id}`, "data-action": "check", onclick: () => actions.check(id), text: "Check" }),
          h("button", { type: "button", id: `act-webhooks-${id}`, "data-action": "webhooks", onclick: () => actions.webhooks(id), text: "Webhooks" }),
          h("button", { type: "button", id: `act-events-${id}`, "data-action": "events", onclick: () => actions.events(id), text: "Events" }))));
    })));
}

function liveLabel(live) {
  return { current: "current", last_good: "last good version", none: "not live" }[live] || live;
}

export function healthView(state) {
  const s = state.status;
  const r = s.last_reload || {};
  const diags = s.diagnostics || [];
  const errors = diags.filter((d) => d.severity === "error").length;
  const warnings = diags.length - errors;
  const files = (s.files?.detail || []).slice().sort((a, b) => a.path.localeCompare(b.path));
  const stale = files.filter((f) => f.live !== "current");
  const ok = r.result === "ok" && errors === 0;
  return h("div", { class: "health" },
    h("div", { class: `summary ${ok ? "good" : "bad"}`, role: "status" },
      h("p", { class: "big", text: ok ? "Configuration healthy" : `Configuration has ${errors} error${errors === 1 ? "" : "s"}` }),
      stale.length ? h("p", {}, `${stale.length} file${stale.length === 1 ? " runs" : "s run"} on ${stale.length === 1 ? "its" : "their"} last good version (or nothing), see below.`) : null),
    h("dl", { class: "facts" },
      h("dt", { text: "Generation" }), h("dd", { id: "generation", text: String(s.generation) }),
      h("dt", { text: "Git commit" }), h("dd", {}, s.git_commit ? h("code", { text: s.git_commit }) : h("span", { class: "muted", text: "not a Git work tree" })),
      h("dt", { text: "Last reload" }), h("dd", {}, r.at_unix ? ageSpan(r.at_unix) : "–", ` · ${(r.duration_ms ?? 0).toFixed(1)} ms · result `, h("strong", { id: "reload-result", text: r.result || "–" })),
      h("dt", { text: "Connections live" }), h("dd", { text: String(s.connections) }),
      h("dt", { text: "Store" }), h("dd", {}, s.store?.ok ? `${s.store.backend}: ${s.store.events} events, ${s.store.suppressions} suppressions` : h("span", { class: "error", text: `store unavailable: ${s.store?.error || "unknown"}` }))),
    h("h2", { text: `Problems (${errors} error${errors === 1 ? "" : "s"}, ${warnings} warning${warnings === 1 ? "" : "s"})` }),
    diags.length
      ? h("ul", { class: "diagnostics" }, diags.map((d, i) => h("li", { class: `diag ${d.severity}` },
        h("code", { class: "line", text: (s.errors || [])[i] || "" }),
        h("div", { class: "parts" },
          h("span", { class: "loc", text: `${d.file}:${d.line}:${d.column}` }), " ",
          h("span", { class: `sev ${d.severity}`, text: d.severity }), " ",
          h("code", { class: "pointer", text: d.pointer || "/" }),
          h("div", { class: "message", text: d.message }),
          d.hint ? h("div", { class: "hint", text: `hint: ${d.hint}` }) : null))))
      : h("p", { class: "state empty", text: "No errors or warnings: every file validates." }),
    h("h2", { text: `Files (${files.length})` }),
    files.length
      ? h("table", { class: "files" },
        h("thead", {}, h("tr", {}, ["File", "Live version", "Errors", "Warnings"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, files.map((f) => h("tr", { class: f.live === "current" ? "" : "stale", "data-file": f.path },
          h("td", {}, h("code", { text: f.path })),
          h("td", { class: `live-${f.live}`, text: liveLabel(f.live) }),
          h("td", { text: String(f.errors) }),
          h("td", { text: String(f.warnings) })))))
      : h("p", { class: "state empty", text: "No configuration files were found." }));
}

export function workspacesView(state, counts, onShow) {
  if (!state.workspaces.length) {
    return h("p", { class: "state empty", text: "No workspaces: no connection lists any under workspaces." });
  }
  return h("ul", { class: "cards" }, state.workspaces.map((w) => h("li", { class: "card", "data-workspace": w.name },
    h("h2", { text: w.name }),
    h("p", { class: "muted", text: w.configured ? "has a kind: Workspace document" : "daemon defaults (no kind: Workspace document)" }),
    w.connections.length
      ? h("ol", { class: "priority" }, w.connections.map((c) => h("li", {}, h("code", { text: c.name }), h("span", { class: "muted", text: ` priority ${c.priority}` }))))
      : h("p", { class: "muted", text: "no connection serves it" }),
    h("p", {}, "Suppressed addresses: ", h("strong", { class: "supp-count", text: counts[w.name] ?? "…" })),
    h("button", { type: "button", onclick: () => onShow(w.name), text: `Show suppressions of ${w.name}` }))));
}
