"""Real SMTP test server for mailplug's integration tests (aiosmtpd).

Listens on 127.0.0.1 only, on ports the OS picks, and prints them as one JSON
line on stdout once every listener is bound:

  submission  STARTTLS required, AUTH PLAIN/LOGIN required (only after TLS),
              PIPELINING advertised
  smtps       implicit TLS from the first byte, AUTH PLAIN/LOGIN required
  plain       no TLS at all, AUTH PLAIN/LOGIN offered in clear (optional)
  throttle    no TLS, no AUTH, every MAIL FROM answered 451 4.7.1 (rate limit)
  login       no TLS, only AUTH LOGIN offered (exercises the LOGIN exchange)
  brief       no TLS, AUTH optional, PIPELINING, closes sessions idle for 1 s
  refuse      greets with 554 5.3.2 and hangs up (a server refusing service)
  echo        STARTTLS required, AUTH PLAIN/LOGIN; every AUTH is answered
              535 5.7.8 with an echo of what the client sent, raw (base64)
              and decoded: a server leaking credentials into its reply
  echo_login  like echo, but only AUTH LOGIN offered
  ratelimited no TLS, AUTH optional, PIPELINING; at most --rate-limit (5) MAIL
              FROM accepted in any sliding 1.0 s window, counted over all of
              this port's sessions and no other port's; the rest get 451 4.7.1
  slow        no TLS, AUTH optional, PIPELINING; the reply to the end of DATA
              comes --slow-ms (300) after the message is spooled, so a client
              killed meanwhile leaves a message the server has but the client
              never saw accepted (what a crash test needs in flight)

Rules shared by every port:
  * an authenticated session may only use a MAIL FROM listed in
    --allowed-from; any other sender gets 553 5.7.1
  * RCPT local part "unknown" gets 550 5.1.1, "busy" gets 450 4.2.1
  * RCPT local part "rejectdata" makes the end of DATA answer 554 5.6.0
  * RCPT local part starting with "tempfail" (tempfail-7f3a@example.test): the
    first RCPT of that address (case-insensitive) on any port during the
    server's lifetime gets 451 4.3.0, every later one is accepted (a retry
    succeeds)
Accepted messages are written to --spool as <queue id>.json (envelope plus the
parsed From, To, Subject, Date, Message-ID and MIME structure, and received_at:
Unix seconds, float, when the end of DATA arrived) and as .eml.

A login is --user or an --also-user, or the password itself (a token login,
as Postmark's server API token is both). The password comes from the
environment (SMTP_TEST_PASSWORD) so it never
shows up in a process listing. The server exits when its stdin closes, so a
test that dies never leaves it running.
"""

import argparse
import asyncio
import base64
import collections
import email
import email.policy
import json
import os
import ssl
import sys
import time
import uuid

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword


class Rules:
    """Handler hooks implementing the per-port policies above."""

    # Lowercased "tempfail*" addresses already answered 451 once. A class
    # attribute, so every port (each has its own Rules) sees the same set:
    # a client retrying through another port must not be refused again.
    tempfailed = set()

    def __init__(self, args, password, throttle=False, pipelining=False, rate_limit=None, slow_ms=0):
        self.user = args.user.encode()
        # Providers whose plugin wants an address-shaped login (Brevo) log in
        # with one of these; same password, same allowed senders.
        self.other_users = {u.strip().encode() for u in args.also_user if u.strip()}
        self.password = password.encode()
        self.allowed_from = {a.strip().lower() for a in args.allowed_from.split(",") if a.strip()}
        self.spool = args.spool
        self.throttle = throttle
        self.pipelining = pipelining
        # MAIL FROM accepted per sliding second (None: no limit), and the
        # monotonic times of those accepted in the last second. Per instance,
        # so only the sessions of the port holding this instance count.
        self.rate_limit = rate_limit
        self.accepted_mail = collections.deque()
        self.slow_s = slow_ms / 1000

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.throttle:
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        if self.pipelining:
            # aiosmtpd reads commands in order, so it copes with pipelined
            # clients; it just does not say so by itself.
            responses = responses[:-1] + ["250-PIPELINING"] + responses[-1:]
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.throttle:
            return "451 4.7.1 Rate limit exceeded for this client, try again later"
        if session.authenticated and address.lower() not in self.allowed_from:
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {self.user.decode()}"
        if self.rate_limit is not None:
            now = time.monotonic()
            while self.accepted_mail and now - self.accepted_mail[0] >= 1.0:
                self.accepted_mail.popleft()
            if len(self.accepted_mail) >= self.rate_limit:
                return "451 4.7.1 Rate limit exceeded, slow down"
            self.accepted_mail.append(now)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local == "unknown":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
        if local == "busy":
            return "450 4.2.1 Mailbox busy, try again later"
        if local.startswith("tempfail") and address.lower() not in Rules.tempfailed:
            Rules.tempfailed.add(address.lower())
            return "451 4.3.0 Temporary local problem, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        reply = self.spool_message(server, session, envelope)
        if self.slow_s > 0:
            await asyncio.sleep(self.slow_s)
        return reply

    def spool_message(self, server, session, envelope):
        """Writes an accepted message to the spool; returns the DATA reply."""
        if any(r.split("@", 1)[0].lower() == "rejectdata" for r in envelope.rcpt_tos):
            return "554 5.6.0 Message content rejected by policy"
        queue_id = uuid.uuid4().hex[:12].upper()
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        record = {
            "queue_id": queue_id,
            "received_at": time.time(),
            "login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "tls": session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "date": str(msg.get("Date", "")),
            "message_id": str(msg.get("Message-ID", "")),
            "content_type": msg.get_content_type(),
            "parts": [p.get_content_type() for p in msg.walk() if not p.is_multipart()],
        }
        with open(os.path.join(self.spool, queue_id + ".eml"), "wb") as f:
            f.write(raw)
        tmp = os.path.join(self.spool, queue_id + ".json.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(self.spool, queue_id + ".json"))
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and (
                auth_data.login == self.user
                or auth_data.login in self.other_users
                # A token login: the secret is user and password at once
                # (Postmark's server API token).
                or auth_data.login == self.password
            )
            and auth_data.password == self.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class Echo(Rules):
    """Answers every AUTH with 535 and everything the client sent in it."""

    async def handle_AUTH(self, server, session, envelope, args):
        mechanism = args[0].upper()
        sent = []
        if mechanism == "PLAIN":
            if len(args) > 1:
                sent.append(args[1].encode())
            else:
                answer = await server.challenge_auth("")
                if answer is MISSING:
                    return None
                sent.append(base64.b64encode(answer))
        elif mechanism == "LOGIN":
            if len(args) > 1:
                sent.append(args[1].encode())
            else:
                answer = await server.challenge_auth(server.AuthLoginUsernameChallenge)
                if answer is MISSING:
                    return None
                sent.append(base64.b64encode(answer))
            answer = await server.challenge_auth(server.AuthLoginPasswordChallenge)
            if answer is MISSING:
                return None
            sent.append(base64.b64encode(answer))
        else:
            return "504 5.5.4 Unrecognized authentication type"
        parts = []
        for raw in sent:
            decoded = base64.b64decode(raw)
            # The decoded text with the NULs of a PLAIN blob left in as-is
            # would end the reply line for some clients; print them escaped
            # as well as in Python's own byte-string form.
            text = decoded.decode("utf-8", "replace").replace("\0", "\\0")
            parts.append(f"raw={raw.decode()} decoded={text} bytes={decoded!r}")
        return "535 5.7.8 Authentication failed for what you sent: " + "; ".join(parts)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--user", default="tester")
    parser.add_argument("--also-user", action="append", default=[])
    parser.add_argument("--allowed-from", default="sender@example.test")
    parser.add_argument("--hostname", default="mx.test.invalid")
    parser.add_argument("--rate-limit", type=int, default=5,
                        help="MAIL FROM accepted per sliding second on the ratelimited port")
    parser.add_argument("--slow-ms", type=int, default=300,
                        help="delay of the end-of-DATA reply on the slow port")
    args = parser.parse_args()
    if args.rate_limit < 1 or args.slow_ms < 0:
        sys.exit("--rate-limit must be at least 1 and --slow-ms at least 0")
    password = os.environ.get("SMTP_TEST_PASSWORD")
    if not password:
        sys.exit("SMTP_TEST_PASSWORD is not set")

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    loop = asyncio.get_running_loop()
    rules = Rules(args, password)
    piped = Rules(args, password, pipelining=True)
    throttle = Rules(args, password, throttle=True)
    echo = Echo(args, password)
    ratelimited = Rules(args, password, pipelining=True, rate_limit=args.rate_limit)
    slow = Rules(args, password, pipelining=True, slow_ms=args.slow_ms)

    def smtp(handler, timeout=60, **kw):
        return lambda: SMTP(handler, hostname=args.hostname, authenticator=handler.authenticator,
                            timeout=timeout, **kw)

    servers = {
        "submission": await loop.create_server(
            smtp(piped, tls_context=tls, require_starttls=True, auth_required=True), "127.0.0.1", 0),
        "smtps": await loop.create_server(
            smtp(rules, auth_required=True, auth_require_tls=False), "127.0.0.1", 0, ssl=tls),
        "plain": await loop.create_server(smtp(rules, auth_require_tls=False), "127.0.0.1", 0),
        "throttle": await loop.create_server(smtp(throttle, auth_require_tls=False), "127.0.0.1", 0),
        "login": await loop.create_server(
            smtp(rules, auth_require_tls=False, auth_exclude_mechanism=["PLAIN"]), "127.0.0.1", 0),
        "brief": await loop.create_server(smtp(piped, timeout=1, auth_require_tls=False), "127.0.0.1", 0),
        "echo": await loop.create_server(
            smtp(echo, tls_context=tls, require_starttls=True), "127.0.0.1", 0),
        "echo_login": await loop.create_server(
            smtp(echo, tls_context=tls, require_starttls=True, auth_exclude_mechanism=["PLAIN"]),
            "127.0.0.1", 0),
        "ratelimited": await loop.create_server(
            smtp(ratelimited, auth_require_tls=False), "127.0.0.1", 0),
        "slow": await loop.create_server(smtp(slow, auth_require_tls=False), "127.0.0.1", 0),
    }
    async def refuse(reader, writer):
        writer.write(b"554 5.3.2 mx.test.invalid Service not available, closing channel\r\n")
        await writer.drain()
        writer.close()

    servers["refuse"] = await asyncio.start_server(refuse, "127.0.0.1", 0)
    ports = {name: s.sockets[0].getsockname()[1] for name, s in servers.items()}
    print(json.dumps(ports), flush=True)

    # Run until the parent closes our stdin.
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    for s in servers.values():
        s.close()


if __name__ == "__main__":
    asyncio.run(main())
