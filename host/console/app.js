// The console's entry point: sign-in, the polling loop that keeps every
// view live, the per-connection dialogs, and view switching.
import { api, AuthError, setToken, token } from "./api.js";
import { h, ageSpan, classBadge, connectionsView, healthView, refreshAges, stageName, workspacesView } from "./views.js";
import { mountForm } from "./form.js";

const POLL_MS = 1500;
const $ = (id) => document.getElementById(id);

// What each provider's dashboard needs: the URL below, which events to
// enable, and what to put in webhook.secret (README, "Provider plugins").
const PROVIDER_SETUP = {
  "custom-smtp": ["Your own sender posts unified events, signed the Standard Webhooks way (v1 HMAC or v1a Ed25519).", "Put the signing key in webhook.secret: whsec_… (HMAC) or whpk_… (Ed25519 public key)."],
  sendgrid: ["Settings → Mail Settings → Event Webhook: paste the URL, enable Delivered, Deferred, Bounced, Dropped, Spam Reports (and any engagement events you want).", "Turn on Signed Event Webhook and put its verification key (base64 DER or PEM) in webhook.secret."],
  postmark: ["Server → Webhooks → Add webhook: paste the URL with HTTP basic auth credentials, enable Delivery, Bounce, Spam Complaint (Open, Click as wanted).", "webhook.secret is user:password of that basic auth."],
  resend: ["Webhooks → Add endpoint: paste the URL and pick the email.* events.", "Put the endpoint's signing secret (whsec_…, Svix) in webhook.secret."],
  mailgun: ["Sending → Webhooks: add the URL for delivered, permanent_fail, temporary_fail, complained (and others as wanted).", "Put the HTTP webhook signing key in webhook.secret."],
  mailjet: ["Account → Event tracking (triggers): paste the URL with basic auth credentials for sent, bounce, blocked, spam.", "webhook.secret is user:password of that basic auth."],
  postal: ["Server → Webhooks: add the URL and the message events.", "Put the server's public signing key (PEM) in webhook.secret."],
  sparkpost: ["Webhooks → New webhook: paste the URL, choose basic auth or a bearer token, select the message events.", "webhook.secret is user:password, or bearer:TOKEN."],
  brevo: ["Transactional → Settings → Webhook: paste the URL, pick delivered, soft/hard bounce, spam, blocked.", "webhook.secret is the bearer token, or user:password for basic auth."],
  mandrill: ["Settings → Webhooks → Add a webhook: paste the URL exactly (Mandrill signs it), pick the message events.", "Put the webhook key in webhook.secret; set webhook.url if a proxy changes the URL the daemon sees."],
  "amazon-ses": ["Create an SNS topic for the configuration set's events, subscribe this URL (HTTPS, with basic auth in it), list the topic ARN in webhook.sns.topics.", "webhook.secret is user:password of the subscription URL."],
};

const state = {
  data: null, // last /v1/console/state
  rendered: {}, // view -> JSON of what it was rendered from
  view: "connections",
  suppressionCounts: {},
  countsAt: 0,
  failures: 0,
  dialogTimer: null,
  opener: null,
};

// ---------- sign-in ----------

let signIn = null;
function askToken(message, refused) {
  const dialog = $("token-dialog");
  // Several requests may fail at once; a refusal is never overwritten by
  // the plain "a token is required" of a request sent before it.
  if (refused || !dialog.open) $("token-error").textContent = message || "";
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
  if (!signIn) {
    signIn = new Promise((resolve) => {
      $("token-form").addEventListener("submit", function submit(e) {
        e.preventDefault();
        setToken($("token-input").value.trim());
        $("token-form").removeEventListener("submit", submit);
        signIn = null;
        resolve();
      });
    });
  }
  return signIn;
}

async function authed(fn) {
  for (;;) {
    try {
      const result = await fn();
      if ($("token-dialog").open) $("token-dialog").close();
      return result;
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
      // A token entered since this request was sent: retry with it.
      if (token() && token() !== e.sent) continue;
      setToken(null);
      await (e.refused
        ? askToken("That token was refused (401). Check the daemon's --admin-token.", true)
        : askToken(e.message, false));
    }
  }
}

// ---------- polling ----------

function setLive(text, bad = false) {
  const el = $("live");
  el.textContent = text;
  el.classList.toggle("bad", bad);
}

function banner(text) {
  const el = $("banner");
  el.hidden = !text;
  el.textContent = text || "";
}

async function poll() {
  try {
    const data = await authed(() => api("/v1/console/state"));
    state.data = data;
    state.failures = 0;
    banner(null);
    render();
    setLive(`Live · generation ${data.generation} · ${data.connections.length} connection${data.connections.length === 1 ? "" : "s"}`);
  } catch (e) {
    state.failures += 1;
    setLive("Disconnected, retrying…", true);
    banner(`Cannot load the daemon's state: ${e.message}. Retrying every ${POLL_MS / 1000} s; what is shown may be out of date.`);
    if (!state.data) {
      for (const id of ["connections", "health", "workspaces"]) {
        $(id).replaceChildren(h("p", { class: "state error", text: `Could not load: ${e.message}` }));
      }
    }
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// Re-render a view only when its data changed, keeping keyboard focus on
// the element (by id) that had it, so polling never steals the user's place.
function replace(id, data, build) {
  const json = JSON.stringify(data);
  if (state.rendered[id] === json) return;
  state.rendered[id] = json;
  const focused = document.activeElement?.id;
  const el = $(id);
  el.replaceChildren(build());
  el.removeAttribute("aria-busy");
  if (focused && !$(focused)?.isConnected) return;
  if (focused && el.contains($(focused)) && document.activeElement !== $(focused)) $(focused).focus();
}

function render() {
  const d = state.data;
  if (!d) return;
  const actions = { test: openTest, check: openCheck, webhooks: openWebhooks, events: openEvents };
  replace("connections", d.connections, () => connectionsView(d, actions));
  replace("health", { ...d.status, fd_limit: null }, () => healthView(d));
  const errors = (d.status.diagnostics || []).filter((x) => x.severity === "error").length;
  const badge = $("health-badge");
  badge.hidden = errors === 0;
  badge.textContent = errors ? `${errors} error${errors === 1 ? "" : "s"}` : "";
  if (state.view === "workspaces") refreshCounts();
  replace("workspaces", { w: d.workspaces, n: state.suppressionCounts }, () => workspacesView(d, state.suppressionCounts, showSuppressions));
}

async function refreshCounts() {
  const supp = state.data?.status?.store?.suppressions;
  if (state.countsAt === supp && Object.keys(state.suppressionCounts).length) return;
  state.countsAt = supp;
  const counts = {};
  for (const w of state.data.workspaces) {
    try {
      const page = await authed(() => api(`/v1/suppressions?workspace=${encodeURIComponent(w.name)}&limit=1000`));
      counts[w.name] = page.next_cursor ? `${page.suppressions.length}+` : String(page.suppressions.length);
    } catch (e) {
      counts[w.name] = `unavailable (${e.message})`;
    }
  }
  state.suppressionCounts = counts;
  render();
}

async function showSuppressions(workspace) {
  const panel = $("suppressions");
  panel.hidden = false;
  panel.replaceChildren(h("h2", { tabindex: "-1", id: "supp-title", text: `Suppressions of ${workspace}` }), h("p", { class: "state loading", text: "Loading…" }));
  $("supp-title").focus();
  try {
    const page = await authed(() => api(`/v1/suppressions?workspace=${encodeURIComponent(workspace)}&limit=100`));
    const list = page.suppressions || [];
    panel.replaceChildren(
      h("h2", { tabindex: "-1", id: "supp-title", text: `Suppressions of ${workspace}` }),
      list.length
        ? h("table", { class: "events" },
          h("thead", {}, h("tr", {}, ["Address", "Reason", "Since"].map((t) => h("th", { scope: "col", text: t })))),
          h("tbody", {}, list.map((s) => h("tr", {},
            h("td", {}, h("code", { text: s.address })),
            h("td", { text: s.reason || s.note || "" }),
            h("td", { text: s.created_at || s.suppressed_at || "" })))))
        : h("p", { class: "state empty", text: "No suppressed addresses in this workspace." }),
      page.next_cursor ? h("p", { class: "muted", text: "Showing the first 100; the rest: GET /v1/suppressions with the cursor." }) : null);
    $("supp-title").focus();
  } catch (e) {
    panel.replaceChildren(h("p", { class: "state error", text: `Could not load suppressions: ${e.message}` }));
  }
}

// ---------- dialogs ----------

function openDialog(title, body, onClose) {
  const dialog = $("action-dialog");
  state.opener = document.activeElement;
  $("action-title").textContent = title;
  $("action-body").replaceChildren(body);
  dialog.onclose = () => {
    clearInterval(state.dialogTimer);
    state.dialogTimer = null;
    if (onClose) onClose();
    // The close event comes after the dialog is gone: when focus has moved
    // on since (the browser restored it, or the user went elsewhere), it
    // stays where it is; only a focus left nowhere goes back to the opener.
    const active = document.activeElement;
    if (active && active !== document.body && !dialog.contains(active)) return;
    if (state.opener?.isConnected) state.opener.focus();
    else if (state.opener?.id && $(state.opener.id)) $(state.opener.id).focus();
  };
  dialog.showModal();
  const first = dialog.querySelector("[autofocus]") || dialog.querySelector("input, select, button:not(.close)");
  if (first) first.focus();
}

function connection(name) {
  return state.data.connections.find((c) => c.name === name);
}

function outcomeView(report, kind) {
  const c = report.classification || {};
  const rows = [
    ["Result", classBadge(c.class)],
    ["Stage", stageName(c.stage)],
    ["Reply code", c.reply_code ?? "–"],
    ["Enhanced status", c.enhanced_status ?? "–"],
    ["Temporary", c.temporary ? "yes: retrying later may help" : "no"],
  ];
  if (kind === "test") {
    rows.push(["Queue id", report.queue_id ?? "–"]);
    rows.push(["Message-ID", report.message_id ?? "–"]);
  }
  if (c.server_text) rows.push(["Server said", h("code", { text: c.server_text })]);
  return h("div", { class: `outcome ${c.class === "accepted" ? "good" : "bad"}`, "data-class": c.class },
    h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", { "data-field": k.toLowerCase().replace(/[^a-z]+/g, "_") }, v)])),
    c.hint && c.class !== "accepted" ? h("p", { class: "hint", "data-field": "hint" }, h("strong", { text: "Hint: " }), c.hint) : null,
    (report.warnings || []).map((w) => h("p", { class: "warning", text: `warning: ${w}` })));
}

function openTest(name) {
  const c = connection(name);
  const result = h("div", { class: "result", "aria-live": "polite" });
  const input = h("input", { id: "test-to", name: "to", type: "email", required: true, autocomplete: "email", placeholder: "someone@example.com", autofocus: true });
  const button = h("button", { type: "submit", class: "primary", text: "Send" });
  const form = h("form", {
    class: "inline",
    onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      result.replaceChildren(h("p", { class: "state loading", text: `Sending through ${c.smtp.host}:${c.smtp.port}…` }));
      try {
        const report = await authed(() => api(`/v1/connections/${encodeURIComponent(name)}/test`, { method: "POST", body: { to: input.value.trim() } }));
        result.replaceChildren(outcomeView(report, "test"));
      } catch (err) {
        result.replaceChildren(h("p", { class: "state error", text: `Not sent: ${err.message}` }));
      } finally {
        button.disabled = false;
      }
    },
  }, h("label", { for: "test-to", text: "Recipient" }), input, button);
  openDialog(`Send Test Email · ${c.display_name}`, h("div", {},
    h("p", {}, "Sends a real test email from ", h("code", { text: c.from.email }), " through ", h("code", { text: `${c.smtp.host}:${c.smtp.port}` }), ` (${c.smtp.security}).`),
    form, result));
}

function checkView(report) {
  return h("div", {},
    h("table", { class: "stages" },
      h("thead", {}, h("tr", {}, ["", "Stage", "Time", "Detail"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, (report.stages || []).map((s) => h("tr", { class: `stage ${s.status}`, "data-stage": s.stage, "data-status": s.status },
        h("td", { class: "mark", "aria-label": s.status, text: s.status === "ok" ? "✓" : s.status === "failed" ? "✗" : "–" }),
        h("td", { text: stageName(s.stage) }),
        h("td", { class: "num", text: `${Number(s.duration_ms).toFixed(1)} ms` }),
        h("td", {}, h("code", { text: s.detail || "" })))))),
    outcomeView(report, "check"));
}

function openCheck(name) {
  const c = connection(name);
  const result = h("div", { class: "result", "aria-live": "polite" });
  const rcpt = h("input", { id: "check-rcpt", type: "email", placeholder: "optional: also try RCPT TO", autocomplete: "email" });
  const button = h("button", { type: "submit", class: "primary", text: "Run check", autofocus: true });
  const run = async () => {
    button.disabled = true;
    result.replaceChildren(h("p", { class: "state loading", text: "Probing DNS → TCP → banner → EHLO → TLS → AUTH → MAIL FROM…" }));
    try {
      const body = rcpt.value.trim() ? { rcpt: rcpt.value.trim() } : undefined;
      const report = await authed(() => api(`/v1/connections/${encodeURIComponent(name)}/check`, { method: "POST", body }));
      result.replaceChildren(h("p", {}, `check ${name} (${report.server}, security: ${report.security})`), checkView(report));
    } catch (err) {
      result.replaceChildren(h("p", { class: "state error", text: `Check failed to run: ${err.message}` }));
    } finally {
      button.disabled = false;
    }
  };
  const form = h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); run(); } },
    h("label", { for: "check-rcpt", text: "Recipient (optional)" }), rcpt, button);
  openDialog(`Check · ${c.display_name}`, h("div", {}, h("p", { text: "Runs every stage of a real SMTP session; no message is sent." }), form, result));
}

function eventsTable(events) {
  if (!events.length) return h("p", { class: "state empty", text: "No events stored for this connection yet." });
  return h("table", { class: "events" },
    h("thead", {}, h("tr", {}, ["Kind", "Recipient", "Occurred", "Received", "Detail"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, events.map((e) => h("tr", { "data-event": e.id, "data-kind": e.kind },
      h("td", {}, h("span", { class: `kind kind-${e.kind}`, text: e.kind + (e.bounce_class ? ` (${e.bounce_class})` : "") })),
      h("td", {}, h("code", { text: e.recipient })),
      h("td", { text: e.occurred_at }),
      h("td", { text: e.received_at }),
      h("td", { text: [e.smtp_status, e.enhanced_status, e.diagnostic].filter(Boolean).join(" ") || "" })))));
}

async function rejectedCounts(name) {
  // Refused webhook requests store nothing; they are counted in /metrics.
  const text = await authed(() => api("/metrics", { text: true }));
  const counts = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("mailplug_webhooks_rejected_total{")) continue;
    const labels = Object.fromEntries([...line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (labels.connection !== name) continue;
    counts[labels.reason] = (counts[labels.reason] || 0) + Number(line.trim().split(/\s+/).pop());
  }
  return counts;
}

function refusalsTable(refusals) {
  if (!refusals.length) return h("p", { class: "state empty", text: "No refused requests since the daemon started." });
  return h("table", { class: "refusals" },
    h("caption", { class: "muted", text: "Newest first; nothing of these was stored." }),
    h("thead", {}, h("tr", {}, ["Refused", "Status", "Reason", "Error sent to the provider"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, refusals.map((r) => h("tr", { "data-reason": r.reason, "data-status": String(r.status) },
      h("td", { text: r.at }),
      h("td", {}, h("code", { text: String(r.status) })),
      h("td", {}, h("span", { class: r.status >= 500 ? "warning" : "error", text: r.reason })),
      h("td", { text: r.message })))));
}

function openWebhooks(name) {
  const c = connection(name);
  const parses = (c.provider.capabilities || []).includes("parses-webhooks");
  const copied = h("span", { class: "copied", role: "status", "aria-live": "polite" });
  const url = h("input", { id: "webhook-url", type: "text", readonly: true, value: c.webhook_url, "aria-describedby": "webhook-url-help" });
  const copy = h("button", {
    type: "button", id: "copy-url", class: "primary", text: "Copy",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(c.webhook_url);
        copied.textContent = "Copied to the clipboard.";
      } catch {
        url.select();
        copied.textContent = document.execCommand("copy") ? "Copied to the clipboard." : "Select the URL and copy it (Ctrl+C).";
      }
    },
  });
  const recent = h("div", { class: "recent" }, h("p", { class: "state loading", text: "Loading the last events…" }));
  const refused = h("p", { class: "muted" });
  const refusals = h("div", { class: "recent", id: "webhook-refusals" }, h("p", { class: "state loading", text: "Loading the refused requests…" }));
  const steps = PROVIDER_SETUP[c.provider.id] || [`Register the URL at ${c.provider.display_name || c.provider.id}; see docs/plugins.md for the events to enable and the secret.`];
  const load = async () => {
    try {
      const page = await authed(() => api(`/v1/events?connection=${encodeURIComponent(name)}&limit=10`));
      recent.replaceChildren(eventsTable(page.events));
      const counts = await rejectedCounts(name);
      const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([r, n]) => `${r}: ${n}`);
      refused.textContent = parts.length ? `Refused requests since start (stored nothing): ${parts.join(", ")}.` : "No refused requests since start.";
    } catch (e) {
      recent.replaceChildren(h("p", { class: "state error", text: `Could not load events: ${e.message}` }));
    }
    try {
      const page = await authed(() => api(`/v1/connections/${encodeURIComponent(name)}/refusals`));
      refusals.replaceChildren(refusalsTable(page.refusals));
    } catch (e) {
      refusals.replaceChildren(h("p", { class: "state error", text: `Could not load the refused requests: ${e.message}` }));
    }
  };
  openDialog(`Webhooks · ${c.display_name}`, h("div", {},
    parses ? null : h("p", { class: "warning", text: `The ${c.provider.id} plugin does not parse webhooks: the endpoint answers 404.` }),
    h("label", { for: "webhook-url", text: "Endpoint URL (paste into the provider's dashboard)" }),
    h("div", { class: "copyrow" }, url, copy), copied,
    h("p", { id: "webhook-url-help", class: "muted", text: "Served on the public listener (--public-url). Only POST with a verified signature is stored." }),
    h("h3", { text: `Setup at ${c.provider.display_name || c.provider.id}` }),
    h("ol", {}, steps.map((s) => h("li", { text: s }))),
    h("p", {}, "Signing: ", c.provider.signature_scheme ? h("code", { text: c.provider.signature_scheme }) : "none", " · webhook.secret ", c.webhook_secret_configured ? h("strong", { text: "configured" }) : h("strong", { class: "error", text: "not configured" })),
    h("h3", { text: "Last events received (all verified: refused requests store nothing)" }),
    recent, refused,
    h("h3", { text: "Last refused requests (signature, auth, malformed, …)" }),
    refusals));
  load();
  state.dialogTimer = setInterval(load, POLL_MS * 2);
}

function openEvents(name) {
  const c = connection(name);
  const kind = h("select", { id: "ev-kind" },
    ["", "delivered", "deferred", "bounced", "complained", "dropped", "opened", "clicked", "unsubscribed"].map((k) => h("option", { value: k, text: k || "any kind" })));
  const rcpt = h("input", { id: "ev-rcpt", type: "search", placeholder: "exact address", autocomplete: "off" });
  const list = h("div", { class: "event-list", "aria-live": "polite" }, h("p", { class: "state loading", text: "Loading events…" }));
  const following = h("p", { class: "muted", role: "status" });
  let last = "";
  const load = async () => {
    const q = new URLSearchParams({ connection: name, limit: "50" });
    if (kind.value) q.set("kind", kind.value);
    if (rcpt.value.trim()) q.set("recipient", rcpt.value.trim());
    try {
      const page = await authed(() => api(`/v1/events?${q}`));
      const json = JSON.stringify(page.events);
      if (json !== last) {
        last = json;
        list.replaceChildren(eventsTable(page.events));
      }
      following.textContent = `Following live · ${page.events.length} shown · updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      list.replaceChildren(h("p", { class: "state error", text: `Could not load events: ${e.message}` }));
    }
  };
  kind.addEventListener("change", () => { last = ""; load(); });
  let debounce;
  rcpt.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => { last = ""; load(); }, 300); });
  openDialog(`Events · ${c.display_name}`, h("div", {},
    h("div", { class: "filters" },
      h("div", {}, h("label", { for: "ev-kind", text: "Kind" }), kind),
      h("div", {}, h("label", { for: "ev-rcpt", text: "Recipient" }), rcpt)),
    following, list));
  load();
  state.dialogTimer = setInterval(load, POLL_MS);
}

// ---------- views ----------

function show(view) {
  if (!["connections", "workspaces", "health", "new"].includes(view)) view = "connections";
  state.view = view;
  for (const section of document.querySelectorAll("main > section[data-view]")) {
    section.hidden = section.dataset.view !== view;
  }
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view === "workspaces" && state.data) refreshCounts();
}

function boot() {
  // Nothing works without the token: the sign-in dialog cannot be dismissed.
  $("token-dialog").addEventListener("cancel", (e) => e.preventDefault());
  document.querySelector("#action-dialog [data-close]").addEventListener("click", () => $("action-dialog").close());
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1));
  mountForm($("new-form"), {
    validate: (body) => authed(() => api("/v1/console/validate", { method: "POST", body })),
    providers: () => authed(() => api("/v1/console/providers")),
  });
  setInterval(() => refreshAges(), 1000);
  poll();
}

boot();
