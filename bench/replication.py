#!/usr/bin/env python3
"""Replication benchmark for geoscim (not a test): three regions on 127.0.0.1, real `geoscim serve`
processes replicating over QUIC with mutual TLS. Python stdlib only. Run via scripts/bench-replication.

Phases (each on the same a/b/c cluster unless said otherwise):
  1. propagation latency at a paced rate (fixed schedule, several threads/connections) from the 2xx
     POST in A to visibility in B and C. Method: one poller per region reads /health
     replication.hwm["a"] every --poll-ms; A's log sequence numbers are given in commit order, so the
     k-th acknowledged write of the phase has seq = base + k (base = A's own mark before the phase);
     its visibility time is the first poll that saw mark >= seq. Cross-check: 1 in --sample writes is
     also polled by `GET /Users?filter=userName eq "…"` in B and C.
  2. saturation: POST to A as fast as possible with --conns connections for --duration; A's write
     rate, B's (and C's) rate of applied changes from origin a (mark advance), lag at the end.
  3. catch-up: SIGTERM C, write --catchup users to A, restart C, time until C's mark for a equals A's.
  4. bytes on the wire per one-attribute change: a separate two-region cluster (a, b) whose QUIC
     traffic goes through a counting UDP relay in this script (each side's peer addr is a relay to the
     other side). PATCH displayName of existing users, count UDP payload bytes both ways.
Every loop is bounded in count and time; every process started is stopped on exit.
"""
import argparse, hashlib, http.client, json, os, selectors, shutil, signal, socket, subprocess
import sys, tempfile, threading, time, urllib.parse, atexit

BASE = "/scim/v2"
TOKEN = "bench-" + os.urandom(12).hex()
HDRS = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/scim+json",
        "Accept": "application/scim+json"}
PROCS = []


def log(*a):
    print("bench-replication:", *a, file=sys.stderr, flush=True)


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


class Region:
    def __init__(self, binary, tmp, name, qport, peers):
        self.binary, self.tmp, self.name = binary, tmp, name
        self.cfg = os.path.join(tmp, name + ".toml")
        text = (f'region = "{name}"\ndata_dir = "{os.path.join(tmp, name)}"\n[http]\n'
                f'listen = "127.0.0.1:0"\n[replication]\nlisten = "127.0.0.1:{qport}"\n'
                f'certs_dir = "{os.path.join(tmp, "certs")}"\n')
        for pname, paddr in peers:
            text += f'[[replication.peers]]\nregion = "{pname}"\naddr = "{paddr}"\n'
        with open(self.cfg, "w") as f:
            f.write(text)
        self.proc = None
        self.port = None

    def start(self, timeout=30):
        logpath = os.path.join(self.tmp, self.name + ".log")
        off = os.path.getsize(logpath) if os.path.exists(logpath) else 0
        logf = open(logpath, "ab")
        env = dict(os.environ)
        env["GEOSCIM_TOKENS"] = '[{tenant="t", sha256="%s"}]' % hashlib.sha256(TOKEN.encode()).hexdigest()
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", self.cfg], stdout=logf,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        PROCS.append(self.proc)
        deadline = time.time() + timeout
        mark = "geoscim: http listening on http://127.0.0.1:"
        while time.time() < deadline:
            with open(logpath, errors="replace") as f:
                f.seek(off)
                lines = [l for l in f if mark in l]
            if lines:
                self.port = int(lines[-1].split(mark)[1].split()[0].strip("/"))
                return self
            if self.proc.poll() is not None:
                raise SystemExit(f"region {self.name} exited; see {logpath}")
            time.sleep(0.05)
        raise SystemExit(f"region {self.name}: no http listen line within {timeout}s")

    def stop(self):
        stop_proc(self.proc)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)


def stop_proc(p):
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def cleanup():
    for p in PROCS:
        try:
            stop_proc(p)
        except Exception:
            pass


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))


def req(conn, method, path, body=None, headers=HDRS):
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def health(conn):
    s, d = req(conn, "GET", "/health", headers={})
    return json.loads(d)


def mark(conn, origin="a"):
    rep = health(conn).get("replication") or {}  # null until the replication loop has run once
    return int((rep.get("hwm") or {}).get(origin, 0))


def user_body(name):
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
            "displayName": "Bench " + name, "active": True}


class Poller(threading.Thread):
    """Reads /health hwm[origin] of one region every interval; records (time, mark) on change."""

    def __init__(self, region, interval, origin="a", max_secs=900):
        super().__init__(daemon=True)
        self.region, self.interval, self.origin, self.max_secs = region, interval, origin, max_secs
        self.samples = []  # (t, mark), only when the mark changes
        self.stop_ev = threading.Event()
        self.last = None
        self.polls = 0

    def run(self):
        c = self.region.conn()
        end = time.monotonic() + self.max_secs
        while not self.stop_ev.is_set() and time.monotonic() < end:
            try:
                m = mark(c, self.origin)
            except Exception:
                c.close()
                c = self.region.conn()
                time.sleep(0.05)
                continue
            t = time.monotonic()
            self.polls += 1
            if m != self.last:
                self.samples.append((t, m))
                self.last = m
            time.sleep(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join(5)

    def first_at_least(self, seq, start_idx=0):
        for i in range(start_idx, len(self.samples)):
            if self.samples[i][1] >= seq:
                return i, self.samples[i][0]
        return len(self.samples), None


def wait_mark(conn, target, secs, origin="a"):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        m = mark(conn, origin)
        if m >= target:
            return m
        time.sleep(0.01)
    return mark(conn, origin)


def post_many(region, prefix, count, conns, max_secs, acks=None, ack_lock=None):
    """POST `count` users (or unbounded if None) as fast as possible until max_secs; returns
    (ok, errors, elapsed)."""
    counter = [0]
    lock = threading.Lock()
    res = {"ok": 0, "err": 0}
    t0 = time.monotonic()
    deadline = t0 + max_secs

    def worker(w):
        c = region.conn()
        ok = err = 0
        while time.monotonic() < deadline:
            with lock:
                n = counter[0]
                if count is not None and n >= count:
                    break
                counter[0] += 1
            name = f"{prefix}-{n}"
            try:
                s, _ = req(c, "POST", BASE + "/Users", user_body(name))
            except Exception:
                c.close()
                c = region.conn()
                err += 1
                continue
            if 200 <= s < 300:
                ok += 1
            else:
                err += 1
        with lock:
            res["ok"] += ok
            res["err"] += err

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max_secs + 30)
    return res["ok"], res["err"], time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
def phase_latency(A, others, rate, duration, threads, poll_ms, sample_every):
    ca = A.conn()
    base = mark(ca, "a")
    total = int(rate * duration)
    pollers = [Poller(r, poll_ms / 1000.0) for r in others]
    for p in pollers:
        p.start()
    acks = []  # (ack_time, send_time, name)
    lock = threading.Lock()
    errors = [0]
    late = [0]
    samples = []  # names for the GET cross-check
    t0 = time.monotonic() + 0.2

    def writer(w):
        c = A.conn()
        for i in range(w, total, threads):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.05:
                late[0] += 1
            name = f"lat-{i}"
            try:
                s, _ = req(c, "POST", BASE + "/Users", user_body(name))
            except Exception:
                c.close()
                c = A.conn()
                errors[0] += 1
                continue
            t = time.monotonic()
            if 200 <= s < 300:
                with lock:
                    acks.append((t, name))
            else:
                errors[0] += 1
            if time.monotonic() > t0 + duration + 30:
                break

    # GET-by-filter cross-check: one checker per region, for 1 in sample_every writes.
    get_lat = {r.name: [] for r in others}
    get_missing = {r.name: 0 for r in others}
    checks_done = threading.Event()

    def checker(r):
        c = r.conn()
        idx = 0
        end = t0 + duration + 40
        while time.monotonic() < end:
            with lock:
                todo = samples[idx:]
            if not todo:
                if checks_done.is_set():
                    break
                time.sleep(0.001)
                continue
            for (ack_t, name) in todo:
                idx += 1
                q = urllib.parse.quote(f'userName eq "{name}"')
                seen = None
                lim = time.monotonic() + 5
                while time.monotonic() < lim:
                    s, d = req(c, "GET", BASE + "/Users?filter=" + q)
                    if s == 200 and json.loads(d).get("totalResults") == 1:
                        seen = time.monotonic()
                        break
                    time.sleep(poll_ms / 1000.0)
                if seen is None:
                    get_missing[r.name] += 1
                else:
                    get_lat[r.name].append(max(0.0, seen - ack_t))

    # sampler: push every sample_every-th ack into `samples` as soon as it happens
    ws = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(threads)]
    cs = [threading.Thread(target=checker, args=(r,), daemon=True) for r in others]

    def sampler():
        seen = 0
        while any(t.is_alive() for t in ws) or seen < len(acks):
            with lock:
                new = acks[seen:]
            for k, (t, name) in enumerate(new, start=seen):
                if k % sample_every == 0:
                    with lock:
                        samples.append((t, name))
            seen += len(new)
            time.sleep(0.001)
        checks_done.set()

    for t in ws + cs:
        t.start()
    st = threading.Thread(target=sampler, daemon=True)
    st.start()
    for t in ws:
        t.join(duration + 60)
    wall = time.monotonic() - t0
    final = base + len(acks)
    for r in others:
        wait_mark(r.conn(), final, 30)
    time.sleep(0.05)
    st.join(10)
    for t in cs:
        t.join(60)
    for p in pollers:
        p.stop()
    acks.sort()
    out = {}
    for p in pollers:
        lat = []
        idx = 0
        missing = 0
        for k, (t, name) in enumerate(acks, start=1):
            idx, seen = p.first_at_least(base + k, idx)
            if seen is None:
                missing += 1
                idx = 0
                continue
            lat.append(max(0.0, seen - t))
        out[p.region.name] = {"lat": lat, "missing": missing, "polls": p.polls,
                              "get": get_lat[p.region.name], "get_missing": get_missing[p.region.name]}
    return {"acked": len(acks), "errors": errors[0], "late": late[0], "wall": wall,
            "rate": len(acks) / max(wall, 1e-9), "per": out}


def phase_saturation(A, B, C, duration, conns, poll_ms):
    ca = A.conn()
    pollers = [Poller(r, poll_ms / 1000.0) for r in (B, C)]
    for p in pollers:
        p.start()
    time.sleep(0.1)
    m0 = {p.region.name: p.last or mark(p.region.conn()) for p in pollers}
    a0 = mark(ca)
    t0 = time.monotonic()
    ok, err, el = post_many(A, "sat", None, conns, duration)
    t1 = time.monotonic()
    a1 = mark(ca)
    m1 = {p.region.name: mark(p.region.conn()) for p in pollers}
    # drain: time until B and C have all of A's marks
    drain = {}
    for p in pollers:
        m = wait_mark(p.region.conn(), a1, 60)
        drain[p.region.name] = time.monotonic() - t1 if m >= a1 else None
    for p in pollers:
        p.stop()
    res = {"a_rate": ok / el, "errors": err, "ok": ok, "secs": el, "per": {}}
    for p in pollers:
        n = p.region.name
        # applied rate during the write window
        res["per"][n] = {"apply_rate": (m1[n] - m0[n]) / (t1 - t0), "lag_end": a1 - m1[n],
                         "drain": drain[n]}
    return res


def phase_catchup(A, C, n, conns, max_secs=600):
    ca = A.conn()
    C.stop()
    ok, err, el = post_many(A, "catch", n, conns, max_secs)
    target = mark(ca)
    t0 = time.monotonic()
    C.start()
    t_http = time.monotonic() - t0
    cc = C.conn()
    m = wait_mark(cc, target, 300)
    t = time.monotonic() - t0
    return {"seeded": ok, "errors": err, "seed_secs": el, "seed_rate": ok / el,
            "target": target, "reached": m, "secs": t if m >= target else None, "t_http": t_http}


# ---- bytes on the wire: counting UDP relay ----------------------------------------------------
class Relay(threading.Thread):
    """Listens on a free port and forwards datagrams to `upstream`; one upstream socket per client
    address. Counts payload bytes and datagrams in both directions."""

    def __init__(self, upstream, max_secs=900):
        super().__init__(daemon=True)
        self.upstream = upstream
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ls.bind(("127.0.0.1", 0))
        self.port = self.ls.getsockname()[1]
        self.bytes = 0
        self.dgrams = 0
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.max_secs = max_secs

    def snapshot(self):
        with self.lock:
            return self.bytes, self.dgrams

    def run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.ls, selectors.EVENT_READ, None)
        by_client = {}
        end = time.monotonic() + self.max_secs
        while not self.stop_ev.is_set() and time.monotonic() < end:
            for key, _ in sel.select(0.2):
                s = key.fileobj
                try:
                    data, addr = s.recvfrom(65535)
                except (BlockingIOError, ConnectionRefusedError, OSError):
                    continue
                with self.lock:
                    self.bytes += len(data)
                    self.dgrams += 1
                if key.data is None:  # from a client
                    u = by_client.get(addr)
                    if u is None:
                        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        u.bind(("127.0.0.1", 0))
                        u.connect(self.upstream)
                        by_client[addr] = u
                        sel.register(u, selectors.EVENT_READ, addr)
                    try:
                        u.send(data)
                    except OSError:
                        pass
                else:  # from upstream back to the client
                    try:
                        self.ls.sendto(data, key.data)
                    except OSError:
                        pass


def phase_wire(binary, tmp, users, changes, conns):
    d = os.path.join(tmp, "wire")
    os.makedirs(d)
    subprocess.run([binary, "certs", "--out", os.path.join(d, "certs"), "--regions", "a,b"],
                   check=True, stdout=subprocess.DEVNULL)
    qa, qb = free_udp_port(), free_udp_port()
    ra, rb = Relay(("127.0.0.1", qa)), Relay(("127.0.0.1", qb))
    ra.start(); rb.start()
    A = Region(binary, d, "a", qa, [("b", f"127.0.0.1:{rb.port}")]).start()
    B = Region(binary, d, "b", qb, [("a", f"127.0.0.1:{ra.port}")]).start()
    try:
        ids = []
        ca = A.conn()
        for i in range(users):
            s, body = req(ca, "POST", BASE + "/Users", user_body(f"wire-{i}"))
            if 200 <= s < 300:
                ids.append(json.loads(body)["id"])
        cb = B.conn()
        target = mark(ca)
        if wait_mark(cb, target, 60) < target:
            return {"error": "B did not catch up with the seeded users"}
        time.sleep(1.0)
        # idle background (keep-alives, acks): 2 s
        def total():
            return tuple(x + y for x, y in zip(ra.snapshot(), rb.snapshot()))
        i0 = total(); time.sleep(2.0); i1 = total()
        idle_bps = (i1[0] - i0[0]) / 2.0
        m_before = mark(ca)
        b0 = total(); t0 = time.monotonic()
        counter = [0]
        lock = threading.Lock()
        okc = [0]

        def worker():
            c = A.conn()
            while True:
                with lock:
                    n = counter[0]
                    if n >= changes:
                        return
                    counter[0] += 1
                uid = ids[n % len(ids)]
                body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "displayName", "value": f"D{n:06d}"}]}
                s, _ = req(c, "PATCH", BASE + "/Users/" + uid, body)
                if 200 <= s < 300:
                    with lock:
                        okc[0] += 1
        ts = [threading.Thread(target=worker, daemon=True) for _ in range(conns)]
        for t in ts: t.start()
        for t in ts: t.join(300)
        target = mark(ca)
        wait_mark(cb, target, 60)
        time.sleep(1.0)  # let the final acks go through
        b1 = total(); el = time.monotonic() - t0
        applied = target - m_before
        raw = b1[0] - b0[0]
        net = raw - idle_bps * el
        return {"changes": okc[0], "log_entries": applied, "bytes": raw, "dgrams": b1[1] - b0[1],
                "idle_bps": idle_bps, "secs": el,
                "per_change": raw / max(okc[0], 1), "per_change_net": net / max(okc[0], 1),
                "per_change_ipudp": (raw + 28 * (b1[1] - b0[1])) / max(okc[0], 1)}
    finally:
        A.stop(); B.stop()
        ra.stop_ev.set(); rb.stop_ev.set()


# ---------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--threads", type=int, default=8, help="writer threads in the paced phase")
    ap.add_argument("--conns", type=int, default=16, help="connections in saturation/seeding")
    ap.add_argument("--catchup", type=int, default=100000)
    ap.add_argument("--poll-ms", type=float, default=1.0)
    ap.add_argument("--sample", type=int, default=50, help="GET cross-check 1 in N paced writes")
    ap.add_argument("--wire-changes", type=int, default=3000)
    ap.add_argument("--phases", default="latency,saturation,catchup,wire")
    ap.add_argument("--out", default=None, help="also write the table here")
    a = ap.parse_args()
    phases = set(a.phases.split(","))
    tmp = tempfile.mkdtemp(prefix="geoscim-benchrep.")
    # atexit runs last-registered first: stop the regions before removing their data dirs
    atexit.register(lambda: (cleanup(), shutil.rmtree(tmp, ignore_errors=True)))
    names = ["a", "b", "c"]
    rows = []
    t_all = time.monotonic()
    if phases & {"latency", "saturation", "catchup"}:
        subprocess.run([a.bin, "certs", "--out", os.path.join(tmp, "certs"), "--regions", "a,b,c"],
                       check=True, stdout=subprocess.DEVNULL)
        qp = {n: free_udp_port() for n in names}
        R = {n: Region(a.bin, tmp, n, qp[n], [(p, f"127.0.0.1:{qp[p]}") for p in names if p != n])
             for n in names}
        for r in R.values():
            r.start()
        A, B, C = R["a"], R["b"], R["c"]
        # wait until peers are connected
        for r in R.values():
            c = r.conn()
            for _ in range(300):
                peers = (health(c).get("replication") or {}).get("peers")
                if peers and all(p["connected"] for p in peers):
                    break
                time.sleep(0.05)
        if "latency" in phases:
            log(f"phase 1: paced {a.rate:.0f} writes/s for {a.duration:.0f}s, {a.threads} threads")
            L = phase_latency(A, [B, C], a.rate, a.duration, a.threads, a.poll_ms, a.sample)
            for n, v in L["per"].items():
                ms = [x * 1000 for x in v["lat"]]
                gm = [x * 1000 for x in v["get"]]
                rows.append((f"propagation a→{n} (hwm poll {a.poll_ms:g} ms), {L['rate']:.0f} w/s "
                             f"achieved, {L['acked']} writes",
                             f"p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms or [0]):.1f} ms"
                             + (f", {v['missing']} unseen" if v["missing"] else "")))
                rows.append((f"propagation a→{n} (GET filter, 1 in {a.sample}, n={len(gm)})",
                             f"p50 {pct(gm, 50):.1f} ms, p99 {pct(gm, 99):.1f} ms"
                             + (f", {v['get_missing']} unseen in 5 s" if v["get_missing"] else "")))
            if L["errors"] or L["late"]:
                rows.append(("paced phase: errors / sends >50 ms behind schedule",
                             f"{L['errors']} / {L['late']}"))
        if "saturation" in phases:
            log(f"phase 2: saturation, {a.conns} connections for {a.duration:.0f}s")
            S = phase_saturation(A, B, C, a.duration, a.conns, 2.0)
            rows.append((f"saturation: POST rate in a ({a.conns} conns, {S['secs']:.1f}s)",
                         f"{S['a_rate']:.0f} writes/s ({S['errors']} errors)"))
            for n, v in S["per"].items():
                dr = "n/a" if v["drain"] is None else f"{v['drain']*1000:.0f} ms"
                rows.append((f"saturation: changes applied in {n} from a",
                             f"{v['apply_rate']:.0f} changes/s; lag at end {v['lag_end']} changes, "
                             f"drained in {dr}"))
        if "catchup" in phases:
            log(f"phase 3: catch-up of {a.catchup} changes")
            K = phase_catchup(A, C, a.catchup, a.conns)
            rows.append((f"catch-up: seeding a with c down ({K['seeded']} POSTs)",
                         f"{K['seed_rate']:.0f} writes/s ({K['seed_secs']:.1f}s, {K['errors']} errors)"))
            sec = "not reached in 300 s" if K["secs"] is None else f"{K['secs']:.2f} s"
            rows.append((f"catch-up: restart c → c's mark for a = a's ({K['target']})",
                         f"{sec} (http up after {K['t_http']:.2f} s)"))
        for r in R.values():
            r.stop()
    if "wire" in phases:
        log(f"phase 4: bytes on the wire, two regions via a counting UDP relay, {a.wire_changes} PATCHes")
        W = phase_wire(a.bin, tmp, 500, a.wire_changes, 4)
        if "error" in W:
            rows.append(("bytes per one-attribute change", "not measured: " + W["error"]))
        else:
            rows.append((f"bytes/change, PATCH displayName a→b, {W['changes']} changes "
                         f"({W['log_entries']} log entries), UDP payload both ways",
                         f"{W['per_change']:.0f} B ({W['per_change_net']:.0f} B minus idle "
                         f"{W['idle_bps']:.0f} B/s; {W['per_change_ipudp']:.0f} B with IP+UDP headers; "
                         f"{W['dgrams']/max(W['changes'],1):.2f} datagrams/change)"))
    out = ["| measure | result |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    out.append("")
    out.append(f"_{os.cpu_count()} CPUs; total {time.monotonic() - t_all:.0f} s; load generator, "
               f"pollers and all regions share this machine._")
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
