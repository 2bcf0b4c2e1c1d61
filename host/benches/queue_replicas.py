"""Driver of `host/benches/queue.sh --replicas`: queued messages/s through the
sending queue with the store on PostgreSQL, one and two replicas, each
against the embedded SQLite store of one process in the same run, into
Postfix smtp-sink on 127.0.0.1 (stdlib only; the daemon client, the sink
and the enqueueing come from queue_bench.py).

queue.sh installs Postfix, builds the daemon, starts smtp-sink and hands its
port here. This driver starts a throwaway PostgreSQL server (initdb into a
temporary dir, as the `postgres` user when run as root, on a loopback port, with
PostgreSQL's default durability: fsync and synchronous_commit on, as
mailplug's SQLite store commits with synchronous = FULL). Then, for each of
--runs runs, for each setup in turn:
  sqlite    one `mailplug serve` on a fresh data dir
  pg-1      one replica on a fresh database
  pg-2      two replicas on one fresh database
N messages are POSTed to /v1/messages:batch (batches of 500 from 4 client
threads per replica; with two replicas each gets half, as behind a load
balancer), then GET /v1/queue of the first replica (its total_pending is the
store's, so the cluster's) is polled every 50 ms until it is 0:
msgs/s = N / (first sight of total_pending 0 - first POST).
Every setup checks that the replicas together counted N sends with outcome
"sent" and that the sink's counter grew by N (each message once), so a run
that lost or duplicated messages fails the benchmark instead of reporting a
rate. CPU seconds of the mailplug processes and of every PostgreSQL process
during the setup are read from /proc, to say where the time goes.
"""

import argparse
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import queue_bench as qb

SETUPS = [("sqlite", "SQLite, 1 process", 0), ("pg-1", "PostgreSQL, 1 replica", 1),
          ("pg-2", "PostgreSQL, 2 replicas", 2)]


def pg_bin(given):
    """PostgreSQL's server binaries: --pg-bin, MAILPLUG_PG_BIN, or the newest
    /usr/lib/postgresql/*/bin."""
    for d in [given, os.environ.get("MAILPLUG_PG_BIN")]:
        if d:
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4].split(".")[0]))
    if not found:
        raise qb.BenchError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
                            "apt-get install postgresql, or --pg-bin DIR)")
    return os.path.dirname(found[-1])


class Postgres:
    """A throwaway server in `dir`, stopped (immediately) by stop()."""

    def __init__(self, bin_dir, timeout):
        # In /tmp, not in the work dir: the postgres user must reach it.
        dir = tempfile.mkdtemp(prefix="mailplug-bench-pg-")
        self.bin, self.dir, self.port = bin_dir, dir, qb.free_port()
        self.root = os.getuid() == 0
        if self.root:
            shutil.chown(dir, "postgres")
        self.run("initdb", "-D", f"{dir}/data", "-A", "trust", "-U", "postgres", "-E", "UTF8",
                 "--locale=C", timeout=timeout)
        options = (f"-p {self.port} -k {dir} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200")
        self.run("pg_ctl", "-D", f"{dir}/data", "-l", f"{dir}/server.log", "-o", options,
                 "-w", "-t", str(int(timeout)), "start", timeout=timeout + 5)

    def run(self, program, *argv, timeout):
        cmd = [os.path.join(self.bin, program), *argv]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise qb.BenchError(f"{program} did not finish within {timeout} s") from None
        if done.returncode != 0:
            raise qb.BenchError(f"{program} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def database(self, name):
        """A new empty database; its URL."""
        self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                 "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}", timeout=60)
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        try:
            self.run("pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "-w", "stop", timeout=60)
        except qb.BenchError as e:
            print(f"queue replicas bench: stopping PostgreSQL: {e}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_cpu():
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "postgres":
                    total += qb.cpu_seconds(pid)
        except OSError:
            pass
    return total


def setup_run(args, sink, config_dir, pg, key, replicas, run):
    """One setup of one run: fresh store, N messages through it."""
    tag = f"{key.replace('-', '')}r{run}"
    store = pg.database(tag) if replicas else None
    daemons = []
    try:
        for r in range(max(replicas, 1)):
            data_dir = os.path.join(args.workdir, f"data-{tag}-{r}")
            os.makedirs(data_dir)
            log = os.path.join(args.workdir, f"mailplug-{tag}-{r}.log")
            daemons.append(qb.Daemon(args, config_dir, data_dir, log, store=store))
        for d in daemons:
            d.wait_ready(args.timeout)
        before = sink.settled()
        cpu0 = (sum(qb.cpu_seconds(d.proc.pid) for d in daemons), postgres_cpu())
        shares = [args.messages // len(daemons) + (i < args.messages % len(daemons))
                  for i in range(len(daemons))]
        results, errors = [None] * len(daemons), []

        def feed(i):
            try:
                results[i] = qb.enqueue(daemons[i], shares[i], f"{tag}-{i}", args.timeout)
            except qb.BenchError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=feed, args=(i,), daemon=True) for i in range(len(daemons))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.timeout + 5)
        if errors or None in results:
            raise qb.BenchError(errors[0] if errors else f"{key}: enqueue did not finish")
        first = min(r[0] for r in results)
        done = daemons[0].wait_pending(lambda p: p == 0, args.timeout, f"{key} run {run} sending")
        cpu1 = (sum(qb.cpu_seconds(d.proc.pid) for d in daemons), postgres_cpu())
        sends = {}
        for d in daemons:
            for outcome, n in d.sends().items():
                sends[outcome] = sends.get(outcome, 0) + n
        if sends.get("sent", 0) != args.messages or set(sends) - {"sent"}:
            raise qb.BenchError(f"{key} run {run}: the replicas counted {sends}, "
                                f"expected {{'sent': {args.messages}}}{daemons[0].log_tail()}")
        got = sink.settled() - before
        if got != args.messages:
            raise qb.BenchError(f"{key} run {run}: the sink received {got} messages, "
                                f"expected {args.messages}")
    finally:
        for d in daemons:
            d.stop()
    latencies = [l for r in results for l in r[2]]
    return {
        "msgs_per_s": args.messages / (done - first),
        "seconds": done - first,
        "enqueue_p99_s": qb.percentile(latencies, 99),
        "latencies": latencies,
        "mailplug_cpu_s": cpu1[0] - cpu0[0],
        "postgres_cpu_s": cpu1[1] - cpu0[1],
    }


def report(result):
    m = result["machine"]
    base = result["setups"]["sqlite"]
    print(f"\nqueue bench, replicas: {result['messages']} messages x {result['runs']} runs per setup, "
          f"{qb.CLIENTS} clients x {qb.BATCH}/batch per replica, max_connections 8 per replica, "
          "smtp-sink on 127.0.0.1; PostgreSQL with fsync and synchronous_commit on")
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, data dirs on {m['data_dir_fs']}")
    print("| setup | msgs/s (median) | vs SQLite (median of per-run ratios) | per run | "
          "enqueue p99 (500/request) | CPU s mailplug | CPU s PostgreSQL | CPU used |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, name, _ in SETUPS:
        s = result["setups"][key]
        ratios = [r["msgs_per_s"] / b["msgs_per_s"] for r, b in zip(s["runs"], base["runs"])]
        cpu = statistics.median(r["mailplug_cpu_s"] for r in s["runs"])
        pcpu = statistics.median(r["postgres_cpu_s"] for r in s["runs"])
        busy = statistics.median((r["mailplug_cpu_s"] + r["postgres_cpu_s"]) / (r["seconds"] * m["nproc"])
                                 for r in s["runs"])
        per_run = " ".join(f"{r['msgs_per_s']:.0f}" for r in s["runs"])
        print(f"| {name} | {s['msgs_per_s']:.0f} | {statistics.median(ratios):.2f} | {per_run} | "
              f"{s['enqueue_p99_s'] * 1000:.0f} ms | {cpu:.1f} | {pcpu:.1f} | {busy * 100:.0f} % |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the mailplug binary")
    parser.add_argument("--sink-port", type=int, required=True)
    parser.add_argument("--sink-counter", required=True, help="file smtp-sink -c writes to")
    parser.add_argument("--workdir", required=True, help="temp dir for configs, data dirs and logs")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="bound of every single wait, s")
    parser.add_argument("--pg-bin", help="PostgreSQL's bin directory (default: the newest installed)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args, _ = parser.parse_known_args()
    if args.messages < 2 or args.runs < 1:
        parser.error("--messages must be at least 2, --runs at least 1")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sink = qb.Sink(args.sink_port, args.sink_counter)
    config_dir = qb.write_config(args.workdir, sink)
    result = {"messages": args.messages, "runs": args.runs, "machine": qb.machine(args.workdir),
              "setups": {key: {"runs": []} for key, _, _ in SETUPS}}
    pg = None
    try:
        pg = Postgres(pg_bin(args.pg_bin), args.timeout)
        for run in range(1, args.runs + 1):
            for key, name, replicas in SETUPS:
                print(f"== run {run}/{args.runs}: {name}", file=sys.stderr, flush=True)
                r = setup_run(args, sink, config_dir, pg, key, replicas, run)
                result["setups"][key]["runs"].append(r)
                print(f"   {r['msgs_per_s']:.0f} msgs/s", file=sys.stderr, flush=True)
        for key, _, _ in SETUPS:
            s = result["setups"][key]
            s["msgs_per_s"] = statistics.median(r["msgs_per_s"] for r in s["runs"])
            s["enqueue_p99_s"] = qb.percentile([l for r in s["runs"] for l in r.pop("latencies")], 99)
    except qb.BenchError as e:
        sys.exit(f"queue replicas bench failed: {e}")
    finally:
        qb.cleanup()
        if pg:
            pg.stop()
    report(result)
    qb.write_json(args.out, result)


if __name__ == "__main__":
    main()
