// The new-connection form: Custom SMTP fields, or a provider plugin's
// common fields plus one input per option of its options JSON Schema
// (GET /v1/console/providers) → the YAML file to commit,
// checked by the daemon's validator (POST /v1/console/validate, the same
// checks as `mailplug validate`) as the user types. Nothing is written:
// the file is copied or downloaded and goes through Git like any other.
import { h } from "./views.js";

const FIELDS = [
  { id: "name", label: "Connection name", hint: "lower-case letters, digits and dashes; used in URLs", required: true, pointer: "/name", value: "corp-relay" },
  { id: "display_name", label: "Display name", pointer: "/display_name", value: "Corporate SMTP Relay" },
  { id: "host", label: "SMTP host", required: true, pointer: "/smtp/host", value: "smtp.example.com", custom: true },
  { id: "port", label: "Port", pointer: "/smtp/port", value: "587", inputmode: "numeric", hint: "empty: 587 for starttls, 465 for tls, 25 for none", custom: true },
  { id: "security", label: "Security", pointer: "/smtp/security", options: ["starttls", "tls", "none"], custom: true },
  { id: "username", label: "Username", pointer: "/smtp/username", value: "relay@example.com", autocomplete: "off", providerHint: "the provider's SMTP user name; leave empty when the provider fills it in" },
  { id: "password_kind", label: "Password from", pointer: "/smtp/password", options: ["env", "file", "(none)"] },
  { id: "password_ref", label: "Variable name or file path", pointer: "/smtp/password", value: "CORP_SMTP_PASSWORD", hint: "a reference, never the password itself" },
  { id: "from_name", label: "From name", pointer: "/from/name", value: "Acme News" },
  { id: "from_email", label: "From email", required: true, pointer: "/from/email", value: "news@example.com", type: "email" },
  { id: "workspaces", label: "Workspaces", pointer: "/workspaces", value: "marketing", hint: "comma-separated" },
];

// A YAML double-quoted scalar: JSON string syntax is valid YAML, so no
// value typed here can change the document's structure.
const q = (s) => JSON.stringify(s);

// The provider id of the Custom SMTP form (the plugin behind `smtp:` alone).
const CUSTOM = "custom-smtp";

// The part of a (sub)schema the form reads: `$ref` into `$defs` and an
// `anyOf`/`oneOf` of one non-null variant are followed; a type list is
// reduced to its first non-null type.
function resolve(root, s, depth = 0) {
  if (!s || typeof s !== "object" || depth > 8) return {};
  if (typeof s.$ref === "string" && s.$ref.startsWith("#/")) {
    const target = s.$ref.slice(2).split("/").reduce((o, k) => (o && typeof o === "object" ? o[k.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined), root);
    const { $ref, ...rest } = s;
    return { ...resolve(root, target, depth + 1), ...rest };
  }
  const alts = s.anyOf || s.oneOf;
  if (Array.isArray(alts)) {
    const real = alts.filter((a) => !(a && a.type === "null"));
    if (real.length === 1) {
      const { anyOf, oneOf, ...rest } = s;
      return { ...resolve(root, real[0], depth + 1), ...rest };
    }
  }
  const out = { ...s };
  if (Array.isArray(out.type)) out.type = out.type.find((t) => t !== "null") || "null";
  if (Array.isArray(out.enum)) out.enum = out.enum.filter((e) => e !== null);
  return out;
}

// One control per top-level property of a provider's options schema.
export function optionFields(schema) {
  if (!schema || typeof schema !== "object") return [];
  const props = schema.properties && typeof schema.properties === "object" ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  return Object.keys(props).map((key) => {
    const p = resolve(schema, props[key]);
    const items = resolve(schema, p.items);
    let kind = "json";
    if (Array.isArray(p.enum) && p.enum.length && p.enum.every((e) => typeof e === "string")) kind = "enum";
    else if (p.type === "string") kind = "string";
    else if (p.type === "integer" || p.type === "number") kind = p.type;
    else if (p.type === "boolean") kind = "boolean";
    else if (p.type === "array" && items.type === "string") kind = "list";
    return {
      key, kind, schema: p, required: required.has(key),
      id: `opt-${key.replace(/[^A-Za-z0-9_-]/g, "_")}`,
      pointer: `/options/${key.replace(/~/g, "~0").replace(/\//g, "~1")}`,
    };
  });
}

// The YAML value of one option control, or undefined when it is not set.
function optionValue(f, el) {
  if (f.kind === "boolean") return el.dataset.touched ? String(el.checked) : undefined;
  const raw = el.value.trim();
  if (raw === "") return undefined;
  if (f.kind === "integer" || f.kind === "number") {
    // Anything that is not a plain number goes as a string, for the
    // validator to name the type error at the field.
    return /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(raw) && Number.isFinite(Number(raw)) ? String(Number(raw)) : q(raw);
  }
  if (f.kind === "list") return `[${raw.split(",").map((x) => x.trim()).filter(Boolean).map(q).join(", ")}]`;
  if (f.kind === "json") {
    try {
      return JSON.stringify(JSON.parse(raw)); // JSON is YAML flow syntax
    } catch {
      return q(raw);
    }
  }
  return q(raw);
}

export function toYaml(v) {
  const lines = [
    "# yaml-language-server: $schema=../schemas/connection.schema.json",
    "api_version: mailplug/v1",
    "kind: Connection",
    `name: ${q(v.name)}`,
  ];
  if (v.display_name) lines.push(`display_name: ${q(v.display_name)}`);
  const custom = !v.provider || v.provider === CUSTOM;
  if (!custom) lines.push(`provider: ${q(v.provider)}`);
  const smtp = [];
  if (custom) {
    smtp.push(`  host: ${q(v.host)}`);
    if (v.port !== "") smtp.push(`  port: ${/^\d{1,9}$/.test(v.port) ? Number(v.port) : q(v.port)}`);
    smtp.push(`  security: ${v.security}`);
  }
  if (v.username) smtp.push(`  username: ${q(v.username)}`);
  if (v.password_kind !== "(none)") smtp.push(`  password: { ${v.password_kind}: ${q(v.password_ref)} }`);
  if (smtp.length) lines.push("smtp:", ...smtp);
  const options = Object.entries(v.options || {});
  if (!custom && options.length) lines.push("options:", ...options.map(([k, val]) => `  ${q(k)}: ${val}`));
  lines.push("from:");
  if (v.from_name) lines.push(`  name: ${q(v.from_name)}`);
  lines.push(`  email: ${q(v.from_email)}`);
  const ws = v.workspaces.split(",").map((s) => s.trim()).filter(Boolean);
  lines.push(`workspaces: [${ws.map(q).join(", ")}]`);
  return lines.join("\n") + "\n";
}

function describedBy(id, hint) {
  return [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" ");
}

function optionControl(f) {
  const p = f.schema;
  const common = { id: `f-${f.id}`, name: f.id, "aria-describedby": describedBy(f.id, p.description), "data-option": f.key };
  if (f.kind === "enum") {
    return h("select", common, [h("option", { value: "", text: f.required ? "(choose)" : "(not set)" }), ...p.enum.map((o) => h("option", { value: o, text: o }))]);
  }
  if (f.kind === "boolean") return h("input", { ...common, type: "checkbox", checked: p.default === true });
  if (f.kind === "json") return h("textarea", { ...common, rows: "3", spellcheck: "false", placeholder: "JSON, e.g. {\"key\": \"value\"}" });
  const attrs = { ...common, type: "text", autocomplete: "off", spellcheck: "false", required: f.required };
  if (f.kind === "integer" || f.kind === "number") {
    Object.assign(attrs, { type: "number", inputmode: f.kind === "integer" ? "numeric" : "decimal", step: f.kind === "integer" ? "1" : "any" });
    if (typeof p.minimum === "number") attrs.min = String(p.minimum);
    if (typeof p.maximum === "number") attrs.max = String(p.maximum);
  }
  if (f.kind === "list") attrs.placeholder = "comma-separated";
  return h("input", attrs);
}

export function mountForm(root, { validate, providers: loadProviders }) {
  const inputs = {};
  const errors = {};
  const wrappers = {};
  const fields = FIELDS.map((f) => {
    const hint = h("p", { id: `${f.id}-hint`, class: "muted small", text: f.hint || "" });
    if (!f.hint) hint.hidden = true;
    const control = f.options
      ? h("select", { id: `f-${f.id}`, name: f.id, "aria-describedby": describedBy(f.id, true) }, f.options.map((o) => h("option", { value: o, text: o })))
      : h("input", {
        id: `f-${f.id}`, name: f.id, type: f.type || "text", value: f.value || "", required: f.required,
        inputmode: f.inputmode, autocomplete: f.autocomplete || "off", spellcheck: "false", "aria-describedby": describedBy(f.id, true),
      });
    inputs[f.id] = control;
    errors[f.id] = h("p", { id: `${f.id}-error`, class: "field-error" });
    wrappers[f.id] = { el: null, hint };
    const el = h("div", { class: "field" },
      h("label", { for: `f-${f.id}` }, f.label, f.required ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null),
      control, hint, errors[f.id]);
    wrappers[f.id].el = el;
    return el;
  });

  // The provider select: Custom SMTP (the default), then every installed plugin.
  let catalog = [];
  const providerSelect = h("select", { id: "f-provider", name: "provider", "aria-describedby": "provider-hint provider-error" },
    h("option", { value: CUSTOM, text: "Custom SMTP" }));
  const providerHint = h("p", { id: "provider-hint", class: "muted small", text: "Loading the installed providers…" });
  const providerError = h("p", { id: "provider-error", class: "field-error" });
  const providerField = h("div", { class: "field" },
    h("label", { for: "f-provider", text: "Provider" }), providerSelect, providerHint, providerError);

  // The options of the chosen provider, rebuilt when the provider changes.
  let optFields = [];
  const optInputs = {};
  const optErrors = {};
  const optionsError = h("p", { id: "options-error", class: "field-error" });
  const optionsBox = h("fieldset", { id: "provider-options", hidden: true });
  const legend = h("legend", { text: "Custom SMTP connection" });

  const buildOptions = (provider) => {
    optFields = provider ? optionFields(provider.options_schema) : [];
    for (const k of Object.keys(optInputs)) delete optInputs[k];
    for (const k of Object.keys(optErrors)) delete optErrors[k];
    const rows = optFields.map((f) => {
      const control = optionControl(f);
      optInputs[f.id] = control;
      optErrors[f.id] = h("p", { id: `${f.id}-error`, class: "field-error" });
      const label = h("label", { for: `f-${f.id}` }, h("code", { text: f.key }), f.required ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null);
      const help = f.schema.description ? h("p", { id: `${f.id}-hint`, class: "muted small", text: f.schema.description }) : null;
      return f.kind === "boolean"
        ? h("div", { class: "field checkbox" }, h("div", { class: "check-row" }, control, label), help, optErrors[f.id])
        : h("div", { class: "field" }, label, control, help, optErrors[f.id]);
    });
    optionsBox.replaceChildren(
      h("legend", { text: provider ? `${provider.display_name} options` : "Options" }),
      ...(rows.length ? rows : [h("p", { class: "muted small", text: "This provider has no options." })]),
      optionsError);
    optionsBox.hidden = !provider;
  };

  const yaml = h("pre", { id: "yaml-out", class: "yaml", tabindex: "0", "aria-label": "Generated YAML" });
  const fileName = h("code", { id: "yaml-file" });
  const verdict = h("div", { id: "validation", class: "validation", role: "status", "aria-live": "polite" }, h("p", { class: "state loading", text: "Validating…" }));
  const copied = h("span", { class: "copied", role: "status", "aria-live": "polite" });
  const copy = h("button", {
    type: "button", id: "copy-yaml", text: "Copy YAML",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(yaml.textContent);
        copied.textContent = "Copied.";
      } catch {
        copied.textContent = "Copy failed: select the YAML and copy it.";
      }
    },
  });
  const download = h("a", { id: "download-yaml", class: "button", href: "#", text: "Download file" });

  root.replaceChildren(h("div", { class: "new-grid" },
    h("form", { id: "new-connection", class: "fields", novalidate: true, onsubmit: (e) => e.preventDefault() },
      h("fieldset", {}, legend, providerField, fields),
      optionsBox),
    h("div", { class: "output" },
      h("h2", {}, "File to commit: ", fileName),
      yaml,
      h("div", { class: "buttons" }, copy, download, copied),
      h("h2", { text: "Validation" }),
      verdict)));

  let seq = 0;
  let timer;
  let checkedText = null;
  let mode = CUSTOM;
  const values = () => {
    const v = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
    v.provider = providerSelect.value;
    v.options = {};
    for (const f of optFields) {
      const val = optionValue(f, optInputs[f.id]);
      if (val !== undefined) v.options[f.key] = val;
    }
    return v;
  };
  const setMode = (id) => {
    if (id === mode) return;
    mode = id;
    const custom = id === CUSTOM;
    const provider = catalog.find((p) => p.id === id);
    legend.textContent = custom ? "Custom SMTP connection" : `${provider.display_name} connection (provider: ${id})`;
    for (const f of FIELDS) {
      wrappers[f.id].el.hidden = Boolean(f.custom) && !custom;
      const hint = custom ? f.hint : f.providerHint || f.hint;
      wrappers[f.id].hint.textContent = hint || "";
      wrappers[f.id].hint.hidden = !hint;
    }
    buildOptions(custom ? null : provider);
    providerHint.textContent = custom
      ? "Custom SMTP: you give the host, port and security."
      : `${provider.display_name} ${provider.version}: the plugin fills in the SMTP host, port and security.`;
  };
  const update = (e) => {
    if (e && e.target && e.target.type === "checkbox") e.target.dataset.touched = "1";
    setMode(providerSelect.value);
    const v = values();
    inputs.password_ref.disabled = v.password_kind === "(none)";
    const text = toYaml(v);
    const path = `connections/${v.name || "new-connection"}.yaml`;
    yaml.textContent = text;
    fileName.textContent = path;
    download.setAttribute("href", `data:application/yaml;charset=utf-8,${encodeURIComponent(text)}`);
    download.setAttribute("download", path.split("/").pop());
    if (text !== checkedText) {
      // The verdict shown is of an older text until the new one arrives:
      // dim it and drop its data-valid mark so nothing reads it as current.
      verdict.classList.add("stale");
      for (const el of verdict.querySelectorAll("[data-valid]")) el.removeAttribute("data-valid");
    }
    clearTimeout(timer);
    timer = setTimeout(() => check(path, text), 250);
  };
  const check = async (path, text) => {
    const mine = ++seq;
    let result;
    try {
      result = await validate({ path, text });
    } catch (e) {
      if (mine === seq) verdict.replaceChildren(h("p", { class: "state error", text: `The validator could not run: ${e.message}` }));
      return;
    }
    if (mine !== seq) return; // a newer edit is being checked
    const targets = [
      ...FIELDS.filter((f) => !wrappers[f.id].el.hidden).map((f) => ({ pointer: f.pointer, error: errors[f.id], input: inputs[f.id] })),
      ...optFields.map((f) => ({ pointer: f.pointer, error: optErrors[f.id], input: optInputs[f.id] })),
      { pointer: "/provider", error: providerError, input: providerSelect },
      { pointer: "/options", error: optionsError, input: null },
    ];
    for (const t of targets) {
      t.error.textContent = "";
      t.input?.removeAttribute("aria-invalid");
    }
    for (const d of result.diagnostics) {
      const t = targets.find((x) => d.pointer === x.pointer || d.pointer.startsWith(`${x.pointer}/`));
      if (!t) continue;
      const el = t.error;
      el.textContent = `${el.textContent ? `${el.textContent} ` : ""}${d.severity}: ${d.pointer === t.pointer ? "" : `${d.pointer}: `}${d.message}${d.hint ? ` (hint: ${d.hint})` : ""}`;
      if (d.severity === "error") t.input?.setAttribute("aria-invalid", "true");
    }
    const summary = result.valid
      ? h("p", { class: "good", "data-valid": "true", text: `Valid${result.warnings ? ` with ${result.warnings} warning${result.warnings === 1 ? "" : "s"}` : ""}: mailplug validate accepts this file.` })
      : h("p", { class: "bad", "data-valid": "false", text: `${result.errors} error${result.errors === 1 ? "" : "s"}: mailplug validate would refuse this file.` });
    checkedText = text;
    verdict.classList.remove("stale");
    // replaceChildren takes nodes, not arrays or nulls.
    verdict.replaceChildren(...[summary,
      result.lines.length ? h("pre", { class: "validate-lines", text: result.lines.join("\n") }) : null,
      ...result.existing.map((x) => h("p", { class: "warning", text: `A live connection is already named ${x.name} (${x.source}): committing this file would be a duplicate name unless it replaces that one.` }))].filter(Boolean));
  };
  root.addEventListener("input", update);
  root.addEventListener("change", update);
  update();
  if (loadProviders) {
    loadProviders().then((answer) => {
      catalog = (answer.providers || []).filter((p) => p.id !== CUSTOM);
      providerSelect.append(...catalog.map((p) => h("option", { value: p.id, text: `${p.display_name} (${p.id} ${p.version})` })));
      providerHint.textContent = `Custom SMTP, or one of the ${catalog.length} installed provider plugins.`;
      providerSelect.dataset.loaded = "true";
    }, (e) => {
      providerHint.textContent = `The provider list could not be read (${e.message}): only Custom SMTP is available.`;
    });
  }
}
