"""Driver of host/benches/queue.sh: the sending queue's sustained rate and its
drain after a restart, against Postfix smtp-sink on 127.0.0.1 (stdlib only).

queue.sh installs Postfix, builds the daemon, starts smtp-sink and hands its
port here. This driver then, for each of --runs runs:
  ceiling   smtp-source -d -s 8 -m N -l 1000 into the sink, timed
  mailplug  a fresh `mailplug serve` (temp data dir, one connection "sink"),
            N messages POSTed to /v1/messages:batch in batches of 500 from 4
            client threads (each request's latency recorded), then GET
            /v1/queue polled every 50 ms until total_pending is 0;
            msgs/s = N / (first sight of total_pending 0 - first POST)
and once:
  drain     --drain messages queued under --hold-queue, SIGTERM, start again
            without it; drain time = that start -> first sight of
            total_pending 0
Every run checks that the daemon counted N sends with outcome "sent" and that
the sink's own counter (smtp-sink -c) grew by N, so a run that lost or failed
messages fails the benchmark instead of reporting a rate.

Every wait is bounded (--timeout); every child is killed on exit, SIGTERM
included, and dies with this process (PR_SET_PDEATHSIG) if it is killed.
"""

import argparse
import ctypes
import http.client
import json
import os
import platform
import queue
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

BATCH = 500
CLIENTS = 4
POLL_S = 0.05
SOURCE = "/usr/sbin/smtp-source"
FROM = "bench@example.test"
CONFIG = """\
api_version: mailplug/v1
kind: Connection
name: sink
smtp: {{ host: 127.0.0.1, port: {port}, security: none }}
from: {{ email: bench@example.test }}
workspaces: [bench]
limits: {{ max_connections: 8 }}
"""

# Children still running, killed by cleanup() whatever way this process ends.
CHILDREN = []


class BenchError(Exception):
    """A run that cannot give a figure (timeout, lost messages, bad answer)."""


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if this driver dies without cleanup."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(argv, **kw):
    proc = subprocess.Popen(argv, preexec_fn=die_with_parent, **kw)
    CHILDREN.append(proc)
    return proc


def cleanup():
    for proc in CHILDREN:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    CHILDREN.clear()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def body_text(size=1000):
    """About `size` bytes of short lines, like smtp-source's -l payload."""
    lines, total, n = [], 0, 0
    while total < size:
        line = f"La de da de da {n}. The quick brown fox jumps over the lazy dog."
        lines.append(line)
        total += len(line) + 2
        n += 1
    return "\r\n".join(lines)[:size]


class Sink:
    """The running smtp-sink: its port and its `-c` counter file."""

    def __init__(self, port, counter_file):
        self.port = port
        self.counter_file = counter_file

    def messages(self):
        """Messages the sink has received so far (last `mesg=` it printed)."""
        try:
            with open(self.counter_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256))
                tail = f.read().decode("ascii", "replace")
        except FileNotFoundError:
            return 0
        found = re.findall(r"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0

    def settled(self, timeout=5.0):
        """The counter once it stopped moving (it is written as sessions end)."""
        deadline = time.monotonic() + timeout
        last = self.messages()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.messages()
            if now == last:
                return now
            last = now
        return last


def ceiling(sink, messages, timeout):
    """msgs/s of smtp-source, 8 parallel sessions reused (-d) as mailplug's pool is."""
    argv = [SOURCE, "-d", "-s", "8", "-m", str(messages), "-l", "1000", "-f", FROM,
            "-t", "r@example.test", "-M", "bench.mailplug.test", f"127.0.0.1:{sink.port}"]
    start = time.monotonic()
    proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"smtp-source did not finish within {timeout} s") from None
    finally:
        CHILDREN.remove(proc)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise BenchError(f"smtp-source exited {proc.returncode}: {err.decode(errors='replace')}")
    return messages / elapsed


class Daemon:
    """One `mailplug serve` process and a client for its admin API."""

    def __init__(self, args, config_dir, data_dir, log_path, hold=False, store=None):
        self.admin = free_port()
        argv = [args.bin, "serve", "--config", config_dir, "--data-dir", data_dir,
                "--listen-admin", f"127.0.0.1:{self.admin}",
                "--listen-public", f"127.0.0.1:{free_port()}"]
        if hold:
            argv.append("--hold-queue")
        if store:
            argv += ["--store", store]
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.started = time.monotonic()
        self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def request(self, method, path, body=None, conn=None, timeout=60):
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def get_json(self, path):
        status, body = self.request("GET", path, timeout=10)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {body[:300]!r}")
        return json.loads(body)

    def wait_ready(self, timeout):
        """Until /v1/queue answers and lists the configured connection "sink"."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"mailplug exited {self.proc.returncode} at start{self.log_tail()}")
            try:
                q = self.get_json("/v1/queue")
                if any(c.get("connection") == "sink" for c in q.get("connections", [])):
                    return time.monotonic()
                last = f"connection sink not listed: {q}"
            except (OSError, http.client.HTTPException, ValueError, BenchError) as e:
                last = str(e)
            time.sleep(POLL_S)
        raise BenchError(f"mailplug not ready within {timeout} s ({last}){self.log_tail()}")

    def pending(self):
        return self.get_json("/v1/queue")["total_pending"]

    def wait_pending(self, pred, timeout, what):
        """Polls GET /v1/queue every 50 ms until pred(total_pending); returns
        the time of the poll that saw it."""
        deadline = time.monotonic() + timeout
        pending = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"mailplug exited {self.proc.returncode} while {what}{self.log_tail()}")
            pending = self.pending()
            if pred(pending):
                return time.monotonic()
            time.sleep(POLL_S)
        raise BenchError(f"{what}: total_pending still {pending} after {timeout} s{self.log_tail()}")

    def sends(self):
        """mailplug_queue_sends_total of connection "sink", summed per outcome."""
        status, body = self.request("GET", "/metrics", timeout=10)
        if status != 200:
            raise BenchError(f"GET /metrics answered {status}")
        out = {}
        for line in body.decode().splitlines():
            if not line.startswith("mailplug_queue_sends_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            if 'connection="sink"' not in labels:
                continue
            outcome = re.search(r'outcome="([^"]*)"', labels)
            key = outcome.group(1) if outcome else "?"
            out[key] = out.get(key, 0) + int(float(value))
        return out

    def stop(self, timeout=60):
        """SIGTERM and a bounded wait; SIGKILL after it. True if it exited by itself."""
        clean = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                clean = False
                self.proc.kill()
                self.proc.wait()
        CHILDREN.remove(self.proc)
        self.log.close()
        return clean

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- mailplug log (tail) ---\n" + "\n".join(text) if text else " (its log is empty)"


def enqueue(daemon, messages, tag, timeout):
    """POSTs `messages` in batches of 500 from 4 threads; returns (time of the
    first POST, time the last answer came, latency of every request in s)."""
    text = body_text()
    jobs = queue.Queue()
    for start in range(0, messages, BATCH):
        jobs.put(range(start, min(start + BATCH, messages)))
    latencies, errors = [], []
    first = []
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", daemon.admin, timeout=timeout)
        try:
            while not errors and time.monotonic() < deadline:
                try:
                    ids = jobs.get_nowait()
                except queue.Empty:
                    return
                body = json.dumps({"messages": [
                    {"workspace": "bench", "to": [f"r{i}-{tag}@example.test"],
                     "subject": f"bench {tag} {i}", "text": text} for i in ids]}).encode()
                t0 = time.monotonic()
                with lock:
                    if not first:
                        first.append(t0)
                status, answer = daemon.request("POST", "/v1/messages:batch", body, conn=conn)
                elapsed = time.monotonic() - t0
                if status != 202:
                    errors.append(f"POST /v1/messages:batch answered {status}: {answer[:300]!r}")
                    return
                got = len(json.loads(answer).get("ids", []))
                if got != len(ids):
                    errors.append(f"202 with {got} ids for {len(ids)} messages")
                    return
                with lock:
                    latencies.append(elapsed)
        except (OSError, http.client.HTTPException, ValueError) as e:
            errors.append(f"POST /v1/messages:batch: {e}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 1)
    if errors:
        raise BenchError(errors[0] + daemon.log_tail())
    batches = -(-messages // BATCH)
    if len(latencies) != batches:
        raise BenchError(f"enqueue did not finish within {timeout} s ({len(latencies)} of {batches} batches)")
    return first[0], time.monotonic(), latencies


def check_delivered(daemon, sink, before, n, what):
    """The daemon counted n sent and no other outcome; the sink got n more."""
    sends = daemon.sends()
    if sends.get("sent", 0) != n or set(sends) - {"sent"}:
        raise BenchError(f"{what}: mailplug counted {sends}, expected {{'sent': {n}}}{daemon.log_tail()}")
    got = sink.settled() - before
    if got != n:
        raise BenchError(f"{what}: the sink received {got} messages, expected {n}")


def write_config(workdir, sink):
    config_dir = os.path.join(workdir, "config")
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "sink.yaml"), "w") as f:
        f.write(CONFIG.format(port=sink.port))
    return config_dir


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its waited-for children
    (Linux /proc; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def mailplug_run(args, sink, config_dir, run):
    data_dir = os.path.join(args.workdir, f"data-run{run}")
    os.makedirs(data_dir)
    daemon = Daemon(args, config_dir, data_dir, os.path.join(args.workdir, f"mailplug-run{run}.log"))
    try:
        daemon.wait_ready(args.timeout)
        before = sink.settled()
        # The daemon's own CPU time per message, start-up excluded: unlike
        # msgs/s it hardly moves when other work shares the cores.
        cpu_before = cpu_seconds(daemon.proc.pid)
        first, enqueued, latencies = enqueue(daemon, args.messages, f"run{run}", args.timeout)
        done = daemon.wait_pending(lambda p: p == 0, args.timeout, f"run {run} sending")
        cpu = cpu_seconds(daemon.proc.pid) - cpu_before
        check_delivered(daemon, sink, before, args.messages, f"run {run}")
    finally:
        daemon.stop()
    return {
        "msgs_per_s": args.messages / (done - first),
        "cpu_us_per_msg": cpu / args.messages * 1e6,
        "seconds": done - first,
        "enqueue_seconds": enqueued - first,
        "latencies": latencies,
    }


def drain(args, sink, config_dir):
    data_dir = os.path.join(args.workdir, "data-drain")
    os.makedirs(data_dir)
    log = os.path.join(args.workdir, "mailplug-drain.log")
    held = Daemon(args, config_dir, data_dir, log, hold=True)
    try:
        held.wait_ready(args.timeout)
        before = sink.settled()
        first, enqueued, _ = enqueue(held, args.drain, "drain", args.timeout)
        pending = held.pending()
        if pending != args.drain:
            raise BenchError(f"--hold-queue: total_pending {pending} after queueing {args.drain}")
        if held.sends().get("sent", 0) or sink.messages() != before:
            raise BenchError("--hold-queue sent messages")
    finally:
        clean = held.stop()
    if not clean:
        raise BenchError(f"mailplug did not exit within 60 s of SIGTERM{held.log_tail()}")
    daemon = Daemon(args, config_dir, data_dir, log)
    try:
        ready = daemon.wait_ready(args.timeout)
        done = daemon.wait_pending(lambda p: p == 0, args.timeout, "draining")
        check_delivered(daemon, sink, before, args.drain, "drain")
    finally:
        daemon.stop()
    return {
        "messages": args.drain,
        "enqueue_seconds": enqueued - first,
        "start_seconds": ready - daemon.started,
        "seconds": done - daemon.started,
        "msgs_per_s": args.drain / (done - daemon.started),
    }


def machine(workdir):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    fs = subprocess.run(["df", "--output=fstype", workdir], capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "data_dir_fs": fs.stdout.split()[-1] if fs.returncode == 0 and fs.stdout.split() else "unknown",
    }


def write_json(path, result):
    """The results as JSON in `path`, when one was given (--out)."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"results written to {path}")


def report(result):
    m = result["machine"]
    ms = lambda s: f"{s * 1000:.0f} ms"
    rows = [
        ("smtp-source ceiling (msgs/s)", f"{result['ceiling_msgs_per_s']:.0f}",
         " ".join(f"{r['ceiling_msgs_per_s']:.0f}" for r in result["runs"])),
        ("mailplug sustained (msgs/s)", f"{result['mailplug_msgs_per_s']:.0f}",
         " ".join(f"{r['mailplug_msgs_per_s']:.0f}" for r in result["runs"])),
        ("mailplug / ceiling", f"{result['ratio']:.2f}",
         " ".join(f"{r['ratio']:.2f}" for r in result["runs"])),
        ("mailplug CPU per message (µs)", f"{result['cpu_us_per_msg']:.0f}",
         " ".join(f"{r['cpu_us_per_msg']:.0f}" for r in result["runs"])),
        ("enqueue latency p50 (500/request)", ms(result["enqueue_p50_s"]),
         " ".join(ms(r["enqueue_p50_s"]) for r in result["runs"])),
        ("enqueue latency p99 (500/request)", ms(result["enqueue_p99_s"]),
         " ".join(ms(r["enqueue_p99_s"]) for r in result["runs"])),
    ]
    d = result.get("drain")
    if d:
        rows.append((f"drain of {d['messages']} after restart", f"{d['seconds']:.1f} s",
                     f"{d['msgs_per_s']:.0f} msgs/s, start {d['start_seconds']:.2f} s"))
    print(f"\nqueue bench: {result['messages']} messages x {len(result['runs'])} runs, "
          f"{CLIENTS} clients x {BATCH}/batch, max_connections 8, smtp-sink on 127.0.0.1")
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, data dir on {m['data_dir_fs']}, "
          f"load {m['load_average']} -> {result['machine_after']['load_average']}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(width)} | median | per run |")
    print(f"| {'-' * width} | --- | --- |")
    for name, median, runs in rows:
        print(f"| {name.ljust(width)} | {median} | {runs} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the mailplug binary")
    parser.add_argument("--sink-port", type=int, required=True)
    parser.add_argument("--sink-counter", required=True, help="file smtp-sink -c writes to")
    parser.add_argument("--workdir", required=True, help="temp dir for configs, data dirs and logs")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--drain", type=int, default=100000, help="0 skips the drain measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="bound of every single wait, s")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.messages < 1 or args.runs < 1 or args.drain < 0:
        parser.error("--messages and --runs must be at least 1, --drain at least 0")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sink = Sink(args.sink_port, args.sink_counter)
    config_dir = write_config(args.workdir, sink)
    result = {"messages": args.messages, "machine": machine(args.workdir), "runs": []}
    try:
        all_latencies = []
        for run in range(1, args.runs + 1):
            print(f"== run {run}/{args.runs}: smtp-source ceiling", file=sys.stderr, flush=True)
            ceil = ceiling(sink, args.messages, args.timeout)
            print(f"== run {run}/{args.runs}: mailplug", file=sys.stderr, flush=True)
            mp = mailplug_run(args, sink, config_dir, run)
            all_latencies += mp["latencies"]
            result["runs"].append({
                "ceiling_msgs_per_s": ceil,
                "mailplug_msgs_per_s": mp["msgs_per_s"],
                "ratio": mp["msgs_per_s"] / ceil,
                "cpu_us_per_msg": mp["cpu_us_per_msg"],
                "mailplug_seconds": mp["seconds"],
                "enqueue_seconds": mp["enqueue_seconds"],
                "enqueue_p50_s": percentile(mp["latencies"], 50),
                "enqueue_p99_s": percentile(mp["latencies"], 99),
            })
            print(f"   ceiling {ceil:.0f}/s, mailplug {mp['msgs_per_s']:.0f}/s", file=sys.stderr, flush=True)
        runs = result["runs"]
        result["ceiling_msgs_per_s"] = statistics.median(r["ceiling_msgs_per_s"] for r in runs)
        result["mailplug_msgs_per_s"] = statistics.median(r["mailplug_msgs_per_s"] for r in runs)
        result["ratio"] = statistics.median(r["ratio"] for r in runs)
        result["cpu_us_per_msg"] = statistics.median(r["cpu_us_per_msg"] for r in runs)
        # Over every request of every run: one run has only N/500 requests.
        result["enqueue_p50_s"] = percentile(all_latencies, 50)
        result["enqueue_p99_s"] = percentile(all_latencies, 99)
        result["enqueue_requests"] = len(all_latencies)
        if args.drain:
            print(f"== drain: {args.drain} messages queued under --hold-queue, then a restart",
                  file=sys.stderr, flush=True)
            result["drain"] = drain(args, sink, config_dir)
    except BenchError as e:
        sys.exit(f"queue bench failed: {e}")
    finally:
        cleanup()
    result["machine_after"] = machine(args.workdir)
    report(result)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
