"""Static checks of deploy/compose.yaml that need no Docker.

There is no Docker daemon where the test suite runs, so the Compose file and
the Dockerfile are never run there; this catches what can rot without one:

- every file and directory the Compose file names exists (build context,
  Dockerfile, bind-mounted files, the default config directory), and every
  named volume and depends_on target is declared;
- every ${NAME} deploy/haproxy.cfg uses is set for the haproxy service, its
  replica host names are services, and its replica ports are the ones the
  replicas listen on;
- every MAILPLUG_* variable the replicas and the Dockerfile set, and every
  flag in a replica's command, is one `mailplug serve --help` lists;
- the admin listener bound beyond loopback comes with a token, the same one
  HAProxy's health checks send;
- every variable the file requires (${NAME:?...}) is listed in
  deploy/env.example;
- the Dockerfile builds with the workspace's rust-version and the wasm
  target the plugins need.

    python3 tests/deploy/compose_check.py --mailplug target/debug/mailplug

Prints each problem and exits 1 if there is any. Compose's own schema and
semantics are not checked (that needs `docker compose config`).
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value, required):
    """Compose's interpolation with no environment: defaults apply and a
    required variable (recorded in `required`) reads as a placeholder."""
    if isinstance(value, dict):
        return {k: interpolate(v, required) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, required) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op and op.endswith("?"):
            required.add(name)
            return f"<{name}>"
        if op and op.endswith("-"):
            return arg
        return ""

    return VAR.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def serve_help(binary):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=60, check=True)
    text = out.stdout
    return set(re.findall(r"\[env: ([A-Z0-9_]+)", text)), set(re.findall(r"(--[a-z][a-z0-9-]*)", text))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailplug", required=True, help="the mailplug binary whose `serve --help` is the reference")
    args = parser.parse_args()

    problems = []
    compose_file = DEPLOY / "compose.yaml"
    required = set()
    compose = interpolate(yaml.safe_load(compose_file.read_text()), required)
    services = compose.get("services") or {}
    volumes = set((compose.get("volumes") or {}).keys())
    known_env, known_flags = serve_help(args.mailplug)
    if "MAILPLUG_STORE_URL" not in known_env:
        problems.append(f"`{args.mailplug} serve --help` lists no MAILPLUG_STORE_URL: is it the mailplug binary?")

    replicas = {}
    for name, svc in services.items():
        for dep in svc.get("depends_on") or []:
            if dep not in services:
                problems.append(f"{name}: depends_on {dep}, which is not a service")
        build = svc.get("build")
        if build:
            context = (DEPLOY / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
            elif dockerfile.resolve() == (DEPLOY / "Dockerfile").resolve():
                replicas[name] = svc
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/")):
                if not (DEPLOY / source).exists():
                    problems.append(f"{name}: bind mount source {source} does not exist (relative to deploy/)")
            elif source not in volumes:
                problems.append(f"{name}: volume {source} is not declared under volumes:")

    if len(replicas) < 2:
        problems.append(f"expected two replicas built from deploy/Dockerfile, found {sorted(replicas)}")
    for name, svc in replicas.items():
        env = environment(svc)
        for var in env:
            if var.startswith("MAILPLUG_") and var not in known_env:
                problems.append(f"{name}: {var} is not an environment variable of `mailplug serve`")
        command = svc.get("command") or []
        if isinstance(command, str):
            command = command.split()
        for word in command:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and flag not in known_flags:
                problems.append(f"{name}: {flag} is not a flag of `mailplug serve`")
        if not env.get("MAILPLUG_STORE_URL", "").startswith(("postgres://", "postgresql://")):
            problems.append(f"{name}: MAILPLUG_STORE_URL is not a PostgreSQL URL")
        admin = env.get("MAILPLUG_LISTEN_ADMIN", "127.0.0.1:8025")
        if not admin.startswith(("127.", "[::1]")) and not env.get("MAILPLUG_ADMIN_TOKEN"):
            problems.append(f"{name}: the admin listener {admin} is beyond loopback without MAILPLUG_ADMIN_TOKEN")

    haproxy = [n for n, s in services.items() if any(
        isinstance(m, str) and m.split(":")[1:2] == ["/usr/local/etc/haproxy/haproxy.cfg"] for m in s.get("volumes") or [])]
    if len(haproxy) != 1:
        problems.append(f"expected one service mounting haproxy.cfg, found {haproxy}")
    else:
        name = haproxy[0]
        svc = services[name]
        mount = next(m for m in svc["volumes"] if m.split(":")[1] == "/usr/local/etc/haproxy/haproxy.cfg")
        if (DEPLOY / mount.split(":")[0]).resolve() != (DEPLOY / "haproxy.cfg").resolve():
            problems.append(f"{name}: mounts {mount.split(':')[0]}, not deploy/haproxy.cfg")
        env = environment(svc)
        cfg = "\n".join(line.split("#", 1)[0] for line in (DEPLOY / "haproxy.cfg").read_text().splitlines())
        for var in sorted(set(VAR.findall(cfg))):
            if var[0] not in env or not env[var[0]]:
                problems.append(f"{name}: haproxy.cfg uses ${{{var[0]}}}, which the service does not set")
        for n in (1, 2):
            host = env.get(f"REPLICA{n}_HOST")
            if host not in replicas:
                problems.append(f"{name}: REPLICA{n}_HOST={host} is not a replica service")
                continue
            renv = environment(replicas[host])
            for kind, var in (("PUBLIC", "MAILPLUG_LISTEN_PUBLIC"), ("ADMIN", "MAILPLUG_LISTEN_ADMIN")):
                port = renv.get(var, "").rsplit(":", 1)[-1]
                if env.get(f"REPLICA{n}_{kind}_PORT") != port:
                    problems.append(f"{name}: REPLICA{n}_{kind}_PORT={env.get(f'REPLICA{n}_{kind}_PORT')} but {host} listens on {port} ({var})")
            if env.get("MAILPLUG_ADMIN_TOKEN") != renv.get("MAILPLUG_ADMIN_TOKEN"):
                problems.append(f"{name}: MAILPLUG_ADMIN_TOKEN is not the one {host} uses, so its health checks get 401")

    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (DEPLOY / "env.example").read_text(), re.M))
    for var in sorted(required - listed):
        problems.append(f"compose.yaml requires ${var}, which deploy/env.example does not list")

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for var in re.findall(r"\b(MAILPLUG_[A-Z0-9_]+)=", dockerfile):
        if var not in known_env:
            problems.append(f"Dockerfile: {var} is not an environment variable of `mailplug serve`")
    rust_version = re.search(r'^rust-version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    if not re.search(rf"^FROM rust:{re.escape(rust_version)}\b", dockerfile, re.M):
        problems.append(f"Dockerfile: the build stage is not FROM rust:{rust_version}-... (Cargo.toml's rust-version)")
    if "rustup target add wasm32-wasip2" not in dockerfile:
        problems.append("Dockerfile: no `rustup target add wasm32-wasip2` (host/build.rs builds the plugins for it)")
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", dockerfile, re.M))
    for stage in re.findall(r"COPY --from=(\S+)", dockerfile):
        if stage not in stages:
            problems.append(f"Dockerfile: COPY --from={stage}, no such stage")

    for p in problems:
        print(f"deploy: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"deploy: compose.yaml ok ({len(services)} services, {len(replicas)} replicas, haproxy.cfg variables all set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
