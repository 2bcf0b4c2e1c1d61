// The new-connection form: Custom SMTP fields → the YAML file to commit,
// checked by the daemon's validator (POST /v1/console/validate, the same
// checks as `mailplug validate`) as the user types. Nothing is written:
// the file is copied or downloaded and goes through Git like any other.
import { h } from "./views.js";

const FIELDS = [
  { id: "name", label: "Connection name", hint: "lower-case letters, digits and dashes; used in URLs", required: true, pointer: "/name", value: "corp-relay" },
  { id: "display_name", label: "Display name", pointer: "/display_name", value: "Corporate SMTP Relay" },
  { id: "host", label: "SMTP host", required: true, pointer: "/smtp/host", value: "smtp.example.com" },
  { id: "port", label: "Port", pointer: "/smtp/port", value: "587", inputmode: "numeric", hint: "empty: 587 for starttls, 465 for tls, 25 for none" },
  { id: "security", label: "Security", pointer: "/smtp/security", options: ["starttls", "tls", "none"] },
  { id: "username", label: "Username", pointer: "/smtp/username", value: "relay@example.com", autocomplete: "off" },
  { id: "password_kind", label: "Password from", pointer: "/smtp/password", options: ["env", "file", "(none)"] },
  { id: "password_ref", label: "Variable name or file path", pointer: "/smtp/password", value: "CORP_SMTP_PASSWORD", hint: "a reference, never the password itself" },
  { id: "from_name", label: "From name", pointer: "/from/name", value: "Acme News" },
  { id: "from_email", label: "From email", required: true, pointer: "/from/email", value: "news@example.com", type: "email" },
  { id: "workspaces", label: "Workspaces", pointer: "/workspaces", value: "marketing", hint: "comma-separated" },
];

// A YAML double-quoted scalar: JSON string syntax is valid YAML, so no
// value typed here can change the document's structure.
const q = (s) => JSON.stringify(s);

export function toYaml(v) {
  const lines = [
    "# yaml-language-server: $schema=../schemas/connection.schema.json",
    "api_version: mailplug/v1",
    "kind: Connection",
    `name: ${q(v.name)}`,
  ];
  if (v.display_name) lines.push(`display_name: ${q(v.display_name)}`);
  lines.push("smtp:", `  host: ${q(v.host)}`);
  if (v.port !== "") lines.push(`  port: ${/^\d{1,9}$/.test(v.port) ? Number(v.port) : q(v.port)}`);
  lines.push(`  security: ${v.security}`);
  if (v.username) lines.push(`  username: ${q(v.username)}`);
  if (v.password_kind !== "(none)") lines.push(`  password: { ${v.password_kind}: ${q(v.password_ref)} }`);
  lines.push("from:");
  if (v.from_name) lines.push(`  name: ${q(v.from_name)}`);
  lines.push(`  email: ${q(v.from_email)}`);
  const ws = v.workspaces.split(",").map((s) => s.trim()).filter(Boolean);
  lines.push(`workspaces: [${ws.map(q).join(", ")}]`);
  return lines.join("\n") + "\n";
}

export function mountForm(root, { validate }) {
  const inputs = {};
  const errors = {};
  const fields = FIELDS.map((f) => {
    const describedBy = [f.hint ? `${f.id}-hint` : null, `${f.id}-error`].filter(Boolean).join(" ");
    const control = f.options
      ? h("select", { id: `f-${f.id}`, name: f.id, "aria-describedby": describedBy }, f.options.map((o) => h("option", { value: o, text: o })))
      : h("input", {
        id: `f-${f.id}`, name: f.id, type: f.type || "text", value: f.value || "", required: f.required,
        inputmode: f.inputmode, autocomplete: f.autocomplete || "off", spellcheck: "false", "aria-describedby": describedBy,
      });
    inputs[f.id] = control;
    errors[f.id] = h("p", { id: `${f.id}-error`, class: "field-error" });
    return h("div", { class: "field" },
      h("label", { for: `f-${f.id}` }, f.label, f.required ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null),
      control,
      f.hint ? h("p", { id: `${f.id}-hint`, class: "muted small", text: f.hint }) : null,
      errors[f.id]);
  });
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
      h("fieldset", {}, h("legend", { text: "Custom SMTP connection" }), fields)),
    h("div", { class: "output" },
      h("h2", {}, "File to commit: ", fileName),
      yaml,
      h("div", { class: "buttons" }, copy, download, copied),
      h("h2", { text: "Validation" }),
      verdict)));

  let seq = 0;
  let timer;
  const values = () => Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
  const update = () => {
    const v = values();
    inputs.password_ref.disabled = v.password_kind === "(none)";
    const text = toYaml(v);
    const path = `connections/${v.name || "new-connection"}.yaml`;
    yaml.textContent = text;
    fileName.textContent = path;
    download.setAttribute("href", `data:application/yaml;charset=utf-8,${encodeURIComponent(text)}`);
    download.setAttribute("download", path.split("/").pop());
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
    for (const f of FIELDS) {
      errors[f.id].textContent = "";
      inputs[f.id].removeAttribute("aria-invalid");
    }
    for (const d of result.diagnostics) {
      const field = FIELDS.find((f) => d.pointer === f.pointer || d.pointer.startsWith(`${f.pointer}/`));
      if (!field) continue;
      const el = errors[field.id];
      el.textContent = `${el.textContent ? `${el.textContent} ` : ""}${d.severity}: ${d.message}${d.hint ? ` (hint: ${d.hint})` : ""}`;
      if (d.severity === "error") inputs[field.id].setAttribute("aria-invalid", "true");
    }
    const summary = result.valid
      ? h("p", { class: "good", "data-valid": "true", text: `Valid${result.warnings ? ` with ${result.warnings} warning${result.warnings === 1 ? "" : "s"}` : ""}: mailplug validate accepts this file.` })
      : h("p", { class: "bad", "data-valid": "false", text: `${result.errors} error${result.errors === 1 ? "" : "s"}: mailplug validate would refuse this file.` });
    verdict.replaceChildren(summary,
      result.lines.length ? h("pre", { class: "validate-lines", text: result.lines.join("\n") }) : null,
      result.existing.map((x) => h("p", { class: "warning", text: `A live connection is already named ${x.name} (${x.source}): committing this file would be a duplicate name unless it replaces that one.` })));
  };
  root.addEventListener("input", update);
  root.addEventListener("change", update);
  update();
}
