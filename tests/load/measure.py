"""`mailplug serve` under load (issue 13): run by tests/load/run.sh, which starts the load rig
(tests/load/up.sh) and an SMTP sink first.

1. Starts `mailplug serve` with an empty tenants folder (its memory at 0 mailboxes), then adds
   the 100 tenant files (tests/load/tenants.py) in two halves, each time waiting until every
   IMAP IDLE mailbox idles (`mailplug_idle_connections`) and reading the process's memory.
2. Idle phase: no mail; the process's CPU time and memory from /proc over IDLE_SECS.
3. Loaded phase: a generator delivers RATE messages a second over LMTP to random mailboxes for
   LOAD_SECS, each with its send time (header `X-Load-Sent`, and in its Message-ID); one
   server-sent-events stream per tenant (`/v1/tenants/{t}/events`) reports each
   `message.stored`: latency from before the LMTP delivery to the event's arrival (and to its
   `created_at_ms`, the store's commit), per kind (IDLE, polled IMAP, POP3).
4. Outbox: N replies enqueued through the API (`reply_to_message`), the time until the SSE
   streams reported every one `delivered` (the sink accepts everything).
Prints a table (markdown) and writes results.json into the work folder.
"""

import argparse
import http.client
import json
import os
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tenants as gen  # noqa: E402

ADMIN = "load-admin-token-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def now_ms():
    return time.time() * 1000.0


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    return env


def proc_sample(pid):
    """(CPU seconds used so far, resident bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return ticks / CLK_TCK, rss


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Sampler(threading.Thread):
    """Samples the process every second: (time, cpu seconds, rss bytes)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                c, r = proc_sample(self.pid)
            except OSError:
                return
            self.samples.append((time.monotonic(), c, r))
            self.stop.wait(1.0)

    def window(self, t0, t1):
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if len(s) < 2:
            return None
        cpu = (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])
        rss = [x[2] for x in s]
        return {"cpu_pct_of_one_core": 100 * cpu, "cpu_secs": s[-1][1] - s[0][1], "secs": s[-1][0] - s[0][0],
                "rss_mean_mb": sum(rss) / len(rss) / 2**20, "rss_max_mb": max(rss) / 2**20}


class Api:
    def __init__(self, addr):
        self.host, port = addr.split(":")
        self.port = int(port)

    def call(self, method, path, body=None, timeout=60):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, raw.decode("utf-8", "replace")

    def metrics(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        c.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        text = c.getresponse().read().decode()
        c.close()
        return text

    def idle_connections(self):
        for line in self.metrics().splitlines():
            if line.startswith("mailplug_idle_connections "):
                return int(float(line.split()[1]))
        return 0


class Events:
    """One SSE stream per tenant; every event with the time it arrived."""

    def __init__(self, api, tenant_ids):
        self.api, self.lock = api, threading.Lock()
        self.stored = {}  # message_id -> (arrived ms, created_at ms, tenant, mailbox, db ref)
        self.outbox = {}  # outbox id -> (state, arrived ms)
        self.threads = [threading.Thread(target=self.follow, args=(t,), daemon=True) for t in tenant_ids]
        self.errors = []
        for th in self.threads:
            th.start()

    def follow(self, tenant):
        try:
            c = http.client.HTTPConnection(self.api.host, self.api.port, timeout=600)
            c.request("GET", f"/v1/tenants/{tenant}/events", headers={"Authorization": f"Bearer {ADMIN}", "Accept": "text/event-stream"})
            r = c.getresponse()
            if r.status != 200:
                self.errors.append(f"{tenant}: SSE status {r.status}")
                return
            while True:
                line = r.readline()
                if not line:
                    return
                if not line.startswith(b"data:"):
                    continue
                arrived = now_ms()
                try:
                    e = json.loads(line[5:])
                except ValueError:
                    continue
                data = e.get("data") or {}
                with self.lock:
                    if e.get("kind") == "message.stored":
                        mid = data.get("message_id") or ""
                        self.stored.setdefault(mid, (arrived, e.get("created_at_ms"), tenant, data.get("mailbox"), data.get("message")))
                    elif e.get("kind") == "outbox.state-changed":
                        self.outbox[data.get("id")] = (data.get("state"), arrived)
        except Exception as ex:  # noqa: BLE001 - a broken stream is reported, not fatal
            self.errors.append(f"{tenant}: {ex}")


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def wait_until(what, secs, f, every=1.0):
    deadline = time.monotonic() + secs
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {secs} s waiting for: {what}")
        time.sleep(every)


def settle_rss(pid, secs=5):
    time.sleep(secs)
    return proc_sample(pid)[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--sink-port", type=int, required=True)
    ap.add_argument("--tenants", type=int, default=gen.TENANTS)
    ap.add_argument("--poll-secs", type=int, default=60)
    ap.add_argument("--idle-secs", type=int, default=60)
    ap.add_argument("--load-secs", type=int, default=120)
    ap.add_argument("--rate", type=float, default=15)
    ap.add_argument("--outbox", type=int, default=200)
    ap.add_argument("--ramp-timeout", type=int, default=300)
    a = ap.parse_args()
    env = read_env(a.env)
    rnd = random.Random(13)

    tenants_dir, secrets = os.path.join(a.work, "tenants"), os.path.join(a.work, "secrets")
    os.makedirs(tenants_dir)
    os.makedirs(secrets)
    gen.private(os.path.join(secrets, "admin.token"), ADMIN)
    boxes = gen.mailboxes(a.tenants)
    idle_total = sum(1 for b in boxes if b[2] == "idle")
    results = {"tenants": a.tenants, "mailboxes": len(boxes), "idle_mailboxes": idle_total, "rate": a.rate,
               "load_secs": a.load_secs, "idle_secs": a.idle_secs, "poll_secs": a.poll_secs, "bin": a.bin}

    log = open(os.path.join(a.work, "serve.log"), "w")
    serve = subprocess.Popen(
        [a.bin, "serve", "--tenants", tenants_dir, "--store", os.path.join(a.work, "store.sqlite3"), "--listen", "127.0.0.1:0",
         "--admin-token-file", os.path.join(secrets, "admin.token"), "--log", "info"],
        env={**os.environ, "MAILPLUG_WASM": a.wasm}, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = serve.stdout.readline()
        if "http://" not in line:
            raise SystemExit(f"serve did not say where it listens: {line!r} (log: {a.work}/serve.log)")
        api = Api(line.strip().rsplit("http://", 1)[1])
        wait_until("/readyz", 120, lambda: api.call("GET", "/readyz")[0] == 200, 0.2)
        sampler = Sampler(serve.pid)
        sampler.start()
        print(f"serve pid {serve.pid} at {api.host}:{api.port}; load average {loadavg()}", file=sys.stderr)

        # 1. Memory at 0, half and all mailboxes; the start storm.
        ramp = [{"mailboxes": 0, "idling": 0, "rss_mb": settle_rss(serve.pid) / 2**20}]
        half = a.tenants // 2
        for lo, hi in ((0, half), (half, a.tenants)):
            t0 = time.monotonic()
            for t in range(lo, hi):
                gen.write_tenant(tenants_dir, t, gen.tenant_toml(t, env, secrets, a.sink_port, a.poll_secs))
            want = sum(1 for b in gen.mailboxes(hi) if b[2] == "idle")
            got = wait_until(f"{want} idling mailboxes", a.ramp_timeout, lambda: (n := api.idle_connections()) >= want and n)
            took = time.monotonic() - t0
            rss = settle_rss(serve.pid)
            ramp.append({"mailboxes": hi * gen.MAILBOXES_PER_TENANT, "idling": got, "rss_mb": rss / 2**20, "all_idling_after_secs": took})
            print(f"ramp: {ramp[-1]}; load average {loadavg()}", file=sys.stderr)
        results["ramp"] = ramp
        r0, r1 = ramp[0], ramp[-1]
        results["rss_per_idling_mailbox_kb"] = (r1["rss_mb"] - r0["rss_mb"]) * 1024 / max(1, r1["idling"])
        results["rss_per_mailbox_kb"] = (r1["rss_mb"] - r0["rss_mb"]) * 1024 / max(1, r1["mailboxes"])
        results["rss_per_idling_mailbox_second_half_kb"] = (r1["rss_mb"] - ramp[1]["rss_mb"]) * 1024 / max(1, r1["idling"] - ramp[1]["idling"])

        ids = [gen.tenant_id(t) for t in range(a.tenants)]
        events = Events(api, ids)
        time.sleep(2)

        # 2. Idle.
        t0 = time.monotonic()
        la0 = loadavg()
        time.sleep(a.idle_secs)
        results["idle"] = sampler.window(t0, time.monotonic())
        results["idle"]["loadavg"] = [la0, loadavg()]
        print(f"idle: {results['idle']}", file=sys.stderr)

        # 3. Load: LMTP at a steady rate to random mailboxes.
        sent = {}
        lmtp = smtplib.LMTP("127.0.0.1", int(env["LOAD_LMTP_PORT"]))
        n = int(a.rate * a.load_secs)
        t0 = time.monotonic()
        la0 = loadavg()
        failed = 0
        for i in range(n):
            due = t0 + i / a.rate
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            tenant, mailbox, kind, u = rnd.choice(boxes)
            ms = now_ms()
            mid = f"load-{i}-{int(ms)}@{env['LOAD_DOMAIN']}"
            msg = (f"From: Customer {i} <customer{i}@example.test>\r\nTo: {gen.user(u, env['LOAD_DOMAIN'])}\r\n"
                   f"Subject: load {i}\r\nMessage-ID: <{mid}>\r\nX-Load-Sent: {ms:.0f}\r\n"
                   f"Date: Mon, 07 Dec 2026 04:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                   f"Hello support, message {i}.\r\n" + "Some text of the customer's question, line after line.\r\n" * 40)
            try:
                lmtp.sendmail(f"customer{i}@example.test", [gen.user(u, env["LOAD_DOMAIN"])], msg.encode())
                sent[mid] = (ms, tenant, mailbox, kind)
            except smtplib.SMTPException as e:
                failed += 1
                print(f"LMTP delivery {i} failed: {e}", file=sys.stderr)
        t1 = time.monotonic()
        lmtp.quit()
        loaded = sampler.window(t0, t1)
        loaded["loadavg"] = [la0, loadavg()]
        results["loaded"] = loaded
        results["sent"], results["lmtp_failed"] = len(sent), failed
        # The polled ones arrive up to a poll interval (+10% jitter) later.
        try:
            wait_until("every message's event", a.poll_secs * 1.2 + 60,
                       lambda: all(m in events.stored for m in sent))
        except SystemExit as e:
            print(e, file=sys.stderr)
        lat = {"idle": [], "poll": [], "pop": []}
        stored_lat = {"idle": [], "poll": [], "pop": []}
        with events.lock:
            for mid, (ms, tenant, mailbox, kind) in sent.items():
                if mid in events.stored:
                    arrived, created, *_ = events.stored[mid]
                    lat[kind].append(arrived - ms)
                    if created:
                        stored_lat[kind].append(created - ms)
        results["latency_ms"] = {k: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99), "max": max(v) if v else None}
                                 for k, v in lat.items()}
        results["stored_latency_ms"] = {k: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99)} for k, v in stored_lat.items()}
        results["missing_events"] = len([m for m in sent if m not in events.stored])
        idle_cpu = results["idle"]["cpu_pct_of_one_core"] / 100
        extra = loaded["cpu_secs"] - idle_cpu * loaded["secs"]
        results["cpu_ms_per_message"] = 1000 * extra / max(1, len(sent))
        print(f"loaded: {loaded}; latency {results['latency_ms']}", file=sys.stderr)

        # 4. Outbox: N replies through the API, the time until all are delivered.
        with events.lock:
            refs = [(v[2], v[4]) for m, v in events.stored.items() if m in sent and v[4]]
        refs = refs[: a.outbox]
        t0 = time.monotonic()

        def enqueue(ref):
            tenant, db = ref
            try:
                status, v = api.call("POST", f"/v1/tenants/{tenant}/queues/out/outbox",
                                     {"reply_to_message": db, "text": "Thank you, we are on it.\n"})
            except OSError as e:
                return (None, "no answer", str(e))
            return v.get("id") if status == 201 and isinstance(v, dict) else (None, status, v)

        with ThreadPoolExecutor(8) as pool:
            ids_out = list(pool.map(enqueue, refs))
        bad = [x for x in ids_out if not isinstance(x, str)]
        ok = [x for x in ids_out if isinstance(x, str)]
        enq_secs = time.monotonic() - t0
        try:
            wait_until("every reply delivered", 300,
                       lambda: all(events.outbox.get(i, ("",))[0] == "delivered" for i in ok), 0.2)
        except SystemExit as e:
            print(e, file=sys.stderr)
        done = [events.outbox[i][1] for i in ok if events.outbox.get(i, ("",))[0] == "delivered"]
        total = (max(done) / 1000 - (time.time() - (time.monotonic() - t0))) if done else None
        results["outbox"] = {"enqueued": len(ok), "refused": len(bad), "delivered": len(done), "enqueue_secs": enq_secs,
                             "all_delivered_secs": total, "per_sec": len(done) / total if total else None}
        if bad:
            print(f"refused enqueues, first: {bad[0]}", file=sys.stderr)
        results["sse_errors"] = events.errors[:5]
        m = api.metrics()
        results["errors_metric"] = sum(float(x.split()[-1]) for x in m.splitlines() if x.startswith("mailplug_errors_total{"))
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    report(results)


def report(r):
    lat, st = r["latency_ms"], r["stored_latency_ms"]
    print(f"\n`mailplug serve` under load: {r['tenants']} tenants, {r['mailboxes']} mailboxes "
          f"({r['idle_mailboxes']} IMAP IDLE, the rest polled IMAP and POP3 every {r['poll_secs']} s)\n")
    print("| measure | value |\n|---|---:|")
    for x in r["ramp"]:
        extra = f", all idling {x['all_idling_after_secs']:.0f} s after the files were written" if "all_idling_after_secs" in x else ""
        print(f"| RSS with {x['mailboxes']} mailboxes ({x['idling']} idling){extra} | {x['rss_mb']:.1f} MB |")
    print(f"| RSS per idling mailbox, (all - none) / idling | {r['rss_per_idling_mailbox_kb']:.1f} KB |")
    print(f"| RSS per idling mailbox, second half only | {r['rss_per_idling_mailbox_second_half_kb']:.1f} KB |")
    print(f"| RSS per mailbox (any kind) | {r['rss_per_mailbox_kb']:.1f} KB |")
    i, l = r["idle"], r["loaded"]
    print(f"| CPU idle, {i['secs']:.0f} s (% of one core; load average {i['loadavg'][0]} -> {i['loadavg'][1]}) | {i['cpu_pct_of_one_core']:.2f} % |")
    print(f"| RSS idle, mean / max | {i['rss_mean_mb']:.1f} / {i['rss_max_mb']:.1f} MB |")
    print(f"| CPU loaded, {r['rate']:g} msg/s for {l['secs']:.0f} s (load average {l['loadavg'][0]} -> {l['loadavg'][1]}) | {l['cpu_pct_of_one_core']:.2f} % |")
    print(f"| RSS loaded, mean / max | {l['rss_mean_mb']:.1f} / {l['rss_max_mb']:.1f} MB |")
    print(f"| CPU per message (loaded minus idle) | {r['cpu_ms_per_message']:.1f} ms |")
    for k, name in (("idle", "IMAP IDLE"), ("poll", "IMAP polled"), ("pop", "POP3 polled")):
        print(f"| new-mail latency {name}: LMTP -> SSE event, p50 / p99 / max (n={lat[k]['n']}) | "
              f"{lat[k]['p50']:.0f} / {lat[k]['p99']:.0f} / {lat[k]['max'] or 0:.0f} ms |")
        print(f"| new-mail latency {name}: LMTP -> stored (event's created_at), p50 / p99 | {st[k]['p50']:.0f} / {st[k]['p99']:.0f} ms |")
    print(f"| messages sent / LMTP failures / without an event | {r['sent']} / {r['lmtp_failed']} / {r['missing_events']} |")
    o = r["outbox"]
    per = f"{o['per_sec']:.1f}/s" if o["per_sec"] else "-"
    tot = f"{o['all_delivered_secs']:.1f} s" if o["all_delivered_secs"] else "-"
    print(f"| outbox: {o['enqueued']} replies enqueued (API, {o['enqueue_secs']:.1f} s), all delivered after | {tot} ({per}) |")
    print(f"| errors counted by serve (mailplug_errors_total) | {r['errors_metric']:.0f} |")
    if r.get("sse_errors"):
        print(f"\nSSE errors: {r['sse_errors']}")


if __name__ == "__main__":
    main()
