#!/usr/bin/env python3
"""The miss path, measured: what rentcache adds to an upstream call, and how it limits them.

    python3 bench/miss.py                    # everything (about 6 minutes on 2 cores)
    python3 bench/miss.py --before REV       # also measure the miss overhead of an older
                                             # commit (built in a worktree; e.g. 2c9fb16)
    python3 bench/miss.py --only overhead|mix|degrade

1. Miss overhead. The simulator answers at a fixed latency (20 ms, no jitter); 1,000
   distinct keys are asked one after another, through rentcache (memory tier only) and
   directly from the simulator, in turn, key by key, over plain HTTP and over HTTPS (the
   simulator with the test CA of tests/tls). Overhead = latency through rentcache - latency
   direct, p50 and p99 of the per-request difference. nginx and Varnish (the reference
   configs, plain HTTP upstream) are measured the same way, same run. Also reported: TLS
   handshakes per 1,000 misses (rentcache_upstream_connections_total{kind="new"}).
2. Cold Zipf mix (issue 13): 50 keep-alive clients (wrk) on 2,000 distinct URLs drawn by
   Zipf rank, from cold, against an origin at a fixed 150 ms; rentcache (one thread, the
   shipped adaptive limit up to max_concurrent: 256) and Varnish (the reference VCL), each
   pinned to core 0, wrk and the origin on core 1. req/s and p99; goal: rentcache >= 1.0x
   Varnish's req/s and p99 <= 1.2x the origin's latency.
3. A degrading upstream: steady Zipf traffic with a 1 s TTL (misses all the time), and the
   simulator going from 150 ms to 1.5 s per answer with 30% errors for 15 s, then back. The
   adaptive limit (rentcache_upstream_concurrency_limit) is sampled every 250 ms: it falls
   while the upstream struggles and recovers afterwards.

Writes bench/miss.json and bench/miss.md (the README table) and bench/limit.png.
"""

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (shared process and load helpers)
from compare import BIN, ROOT, BENCH, Proc, free_port, sh, wrk  # noqa: E402

TLS = os.path.join(ROOT, "tests", "tls")
ADMIN_TOKEN = "bench"


def sim(work, latency_ms, tls=False, cpu=compare.LOAD_CPU, extra=()):
    port = free_port()
    cmd = [BIN, "simulate", "--port", str(port), "--latency-ms", str(latency_ms), "--latency-sigma", "0",
           "--threads", "1"] + list(extra)
    tls_port = None
    if tls:
        tls_port = free_port()
        cmd += ["--tls-port", str(tls_port), "--tls-cert", os.path.join(TLS, "origin.pem"),
                "--tls-key", os.path.join(TLS, "origin.key")]
    p = Proc(cmd, cpu, port, log=os.path.join(work, f"sim-{port}.log"))
    if tls_port:
        compare.wait_port(tls_port, p.p)
    p.tls_port = tls_port
    return p


def rentcache(work, origin_url, binary=BIN, ttl="1h", extra_upstream="", threads=1, ca=True, env=None):
    port, admin = free_port(), free_port()
    ca_line = f'  ca_file: "{os.path.join(TLS, "ca.pem")}"\n' if (ca and origin_url.startswith("https")) else ""
    text = f"""server: {{listen: ["127.0.0.1:{port}"], threads: {threads}, compression_level: 0}}
admin: {{listen: "127.0.0.1:{admin}"}}
upstream:
  base_url: "{origin_url}"
{ca_line}{extra_upstream}memory: {{max_bytes: 1GiB}}
refresh_ahead: {{hot_threshold: 0}}
warm: {{on_start: false}}
routes:
  - name: api
    match: {{path: /propertyadvertising.php}}
    ttl: {ttl}
    stale_while_revalidate: 10m
    stale_if_error: 10m
    include_params: [rob, noimage, propref, limit, page]
    body: json_array
"""
    conf = os.path.join(work, f"rc-{port}.yaml")
    open(conf, "w").write(text)
    env = dict({"RUST_LOG": "warn", "RENTCACHE_ADMIN_TOKEN": ADMIN_TOKEN}, **(env or {}))
    p = Proc([binary, "serve", "-c", conf], compare.SERVER_CPU, port, env=env,
             log=os.path.join(work, f"rc-{port}.log"))
    p.admin = admin
    return p


def metrics(p):
    c = http.client.HTTPConnection("127.0.0.1", p.admin, timeout=10)
    c.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def paired_gets(via_port, direct_port, paths, tls=False):
    """Latency (ms) of each path through the server and directly from the origin, asked in
    turn (via, then direct, key by key) on two keep-alive connections, so that whatever else
    the machine does weighs on both alike."""
    def conn(port, https):
        if https:
            ctx = ssl.create_default_context(cafile=os.path.join(TLS, "ca.pem"))
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def timed(c, path):
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status}")
        return (time.perf_counter() - t0) * 1000

    via_c, direct_c = conn(via_port, False), conn(direct_port, tls)
    via, direct = [], []
    for path in paths:
        via.append(timed(via_c, path))
        direct.append(timed(direct_c, path))
    via_c.close()
    direct_c.close()
    return via, direct


def overhead(work, binary, label, tls, n=1000, peer=None):
    """What one server adds to a miss: rentcache (`binary`), or nginx or Varnish (`peer`,
    their reference configs, plain HTTP upstream only: Varnish has no TLS backends)."""
    s = sim(work, 20, tls=tls)
    try:
        origin = f"https://127.0.0.1:{s.tls_port}" if tls else f"http://127.0.0.1:{s.port}"
        env = {"SSL_CERT_FILE": os.path.join(TLS, "ca.pem")} if tls else None
        if peer:
            rc = compare.start_server(peer, work, f"127.0.0.1:{s.port}")
        else:
            rc = rentcache(work, origin, binary=binary, ca=(binary == BIN), env=env)
        ours = binary == BIN and not peer
        try:
            paths = [f"/propertyadvertising.php?rob=rent&limit=1&page={i}" for i in range(1, n + 1)]
            warm = [f"/propertyadvertising.php?rob=sale&limit=1&page={i}" for i in range(1, 51)]
            direct_port = s.tls_port if tls else s.port
            paired_gets(rc.port, direct_port, warm, tls=tls)   # connections and code paths warm
            before = metrics(rc) if ours else {}
            via, direct = paired_gets(rc.port, direct_port, paths, tls=tls)
            after = metrics(rc) if ours else {}
            diff = [v - d for v, d in zip(via, direct)]
            new = after.get('rentcache_upstream_connections_total{kind="new"}', 0) - \
                before.get('rentcache_upstream_connections_total{kind="new"}', 0)
            return {"label": peer or label, "tls": tls, "misses": n,
                    "direct_p50_ms": pct(direct, 50), "via_p50_ms": pct(via, 50),
                    "added_p50_ms": pct(diff, 50), "added_p99_ms": pct(diff, 99),
                    "handshakes_per_1000": (new * 1000 / n) if ours else None}
        finally:
            rc.stop()
    finally:
        s.stop()


def build_before(rev):
    """Builds commit `rev` in a worktree of its own; returns its binary."""
    wt = os.path.join(tempfile.gettempdir(), f"rentcache-before-{rev}")
    if not os.path.isdir(wt):
        sh(["git", "worktree", "add", "--detach", wt, rev], cwd=ROOT)
    print(f"building {rev} (release) in {wt}")
    sh(["cargo", "build", "--release", "--quiet"], cwd=wt)
    return os.path.join(wt, "target", "release", "rentcache")


def cold_mix(work, server, duration):
    s = sim(work, 150)
    try:
        if server == "rentcache":
            p = rentcache(work, f"http://127.0.0.1:{s.port}")
        else:
            p = compare.start_server("varnish", work, f"127.0.0.1:{s.port}")
        try:
            r = wrk(p.port, "/", duration, conns=50, script="wrk_zipf.lua", extra=["2000"])
            calls = compare.sim_calls(s.port)
            return {"server": server, "rps": r["rps"], "p50_ms": r["p50"], "p99_ms": r["p99"],
                    "errors": r["errors"] + r["non2xx"], "upstream_calls": calls}
        finally:
            p.stop()
    finally:
        s.stop()


def set_faults(sim_port, settings):
    c = http.client.HTTPConnection("127.0.0.1", sim_port, timeout=10)
    body = json.dumps(settings)
    c.request("POST", "/__sim/faults", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 200, r.status


def degrade(work, calm=15, storm=15, after=20):
    s = sim(work, 150)
    rc = rentcache(work, f"http://127.0.0.1:{s.port}", ttl="1s")
    samples = []
    stop = threading.Event()

    def sampler():
        t0 = time.time()
        while not stop.is_set():
            m = metrics(rc)
            samples.append({"t": time.time() - t0,
                            "limit": m.get("rentcache_upstream_concurrency_limit", 0),
                            "in_flight": m.get("rentcache_upstream_in_flight", 0)})
            time.sleep(0.25)

    total = calm + storm + after
    load = threading.Thread(target=lambda: wrk(rc.port, "/", total, conns=200, script="wrk_zipf.lua",
                                               extra=["20000"]))
    th = threading.Thread(target=sampler)
    try:
        th.start()
        load.start()
        time.sleep(calm)
        set_faults(s.port, {"latency_ms": 1500, "error_rate": 0.3, "error_status": 503})
        time.sleep(storm)
        set_faults(s.port, {"latency_ms": 150, "error_rate": 0.0})
        load.join()
    finally:
        stop.set()
        th.join()
        rc.stop()
        s.stop()
    phase = lambda a, b: [x["limit"] for x in samples if a <= x["t"] < b]  # noqa: E731
    summary = {
        "calm_limit_median": statistics.median(phase(calm / 2, calm) or [0]),
        "storm_limit_min": min(phase(calm, calm + storm) or [0]),
        "storm_limit_median": statistics.median(phase(calm + storm / 2, calm + storm) or [0]),
        "recovered_limit_median": statistics.median(phase(total - after / 3, total) or [0]),
        "phases_s": [calm, storm, after],
    }
    return summary, samples


def plot(samples, phases):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot([x["t"] for x in samples], [x["limit"] for x in samples], label="limit")
    ax.plot([x["t"] for x in samples], [x["in_flight"] for x in samples], label="in flight", alpha=0.6)
    ax.axvspan(phases[0], phases[0] + phases[1], color="red", alpha=0.1, label="upstream 10x slower, 30% 503")
    ax.set_xlabel("seconds")
    ax.set_ylabel("upstream calls")
    ax.set_title("rentcache's adaptive upstream concurrency limit")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(BENCH, "limit.png"), dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="also measure this older commit's miss overhead")
    ap.add_argument("--only", choices=["overhead", "mix", "degrade"])
    ap.add_argument("--duration", type=int, default=10, help="seconds per cold-mix run")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    compare.ensure_tools()
    if not args.no_build:
        compare.build()
    results = {"command": " ".join(["python3", "bench/miss.py"] + sys.argv[1:]),
               "machine": compare.machine() if hasattr(compare, "machine") else ""}
    with tempfile.TemporaryDirectory() as work:
        if args.only in (None, "overhead"):
            rows = []
            binaries = [("this commit", BIN)]
            if args.before:
                binaries.insert(0, (args.before, build_before(args.before)))
            for label, binary in binaries:
                for tls in (False, True):
                    r = overhead(work, binary, label, tls)
                    print(json.dumps(r))
                    rows.append(r)
            for peer in ("nginx", "varnish"):
                r = overhead(work, BIN, "", False, peer=peer)
                print(json.dumps(r))
                rows.append(r)
            results["overhead"] = rows
        if args.only in (None, "mix"):
            rows = [cold_mix(work, name, args.duration) for name in ("rentcache", "varnish")]
            for r in rows:
                print(json.dumps(r))
            results["cold_mix"] = rows
        if args.only in (None, "degrade"):
            summary, samples = degrade(work)
            print(json.dumps(summary))
            results["degrade"] = summary
            plot(samples, summary["phases_s"])
    old = {}
    path = os.path.join(BENCH, "miss.json")
    if os.path.exists(path):
        old = json.load(open(path))
    old.update(results)
    json.dump(old, open(path, "w"), indent=2)
    write_md(old)


def write_md(r):
    lines = ["| measurement | figure |", "|---|---|"]
    for o in r.get("overhead", []):
        scheme = "HTTPS" if o["tls"] else "HTTP"
        hs = "" if o["handshakes_per_1000"] is None else f"; {o['handshakes_per_1000']:.1f} TLS handshakes per 1,000 misses" if o["tls"] else ""
        via = o["label"] if o["label"] in ("nginx", "varnish") else "rentcache"
        lines.append(f"| miss overhead, {o['label']}, {scheme} upstream (20 ms origin, {o['misses']} misses) | "
                     f"+{o['added_p50_ms']:.2f} ms p50, +{o['added_p99_ms']:.2f} ms p99 "
                     f"(direct {o['direct_p50_ms']:.2f} ms, through {via} {o['via_p50_ms']:.2f} ms){hs} |")
    mix = {m["server"]: m for m in r.get("cold_mix", [])}
    if "rentcache" in mix and "varnish" in mix:
        rc, v = mix["rentcache"], mix["varnish"]
        for m in (rc, v):
            lines.append(f"| cold Zipf mix, 2,000 URLs, 50 clients, 150 ms origin: {m['server']} | "
                         f"{m['rps']:,.0f} req/s, p50 {m['p50_ms']:.0f} ms, p99 {m['p99_ms']:.0f} ms, "
                         f"{m['upstream_calls']} upstream calls, {m['errors']} errors |")
        lines.append(f"| cold Zipf mix: rentcache / Varnish req/s; rentcache p99 / origin latency | "
                     f"{rc['rps'] / v['rps']:.2f}x; {rc['p99_ms'] / 150:.2f}x |")
    d = r.get("degrade")
    if d:
        lines.append(f"| adaptive limit, upstream 150 ms -> 1.5 s with 30% 503 for {d['phases_s'][1]} s, then back | "
                     f"{d['calm_limit_median']:.0f} while healthy, down to {d['storm_limit_min']:.0f} "
                     f"(median {d['storm_limit_median']:.0f}) while degraded, {d['recovered_limit_median']:.0f} after |")
    open(os.path.join(BENCH, "miss.md"), "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
