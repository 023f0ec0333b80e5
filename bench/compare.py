#!/usr/bin/env python3
"""rentcache beside nginx proxy_cache and Varnish, measured in the same run.

    python3 bench/compare.py                # full run (about 15 minutes on 2 cores)
    python3 bench/compare.py --quick        # one round, short runs (a smoke test)

Builds rentcache (release), installs nginx-light, varnish, wrk (and cmake) from Debian when missing,
and starts rentcache's simulator as the origin with a fixed latency (150 ms). Every server
gets the same policy (forced 5 s TTL, stale-while-revalidate, coalescing, keep-alive to the
origin; reference configs in bench/peers/), one worker, and core 0; the load generator and
the origin get core 1. Each measurement is repeated (--rounds, default 3); ratios are taken
within a round, then medians are reported.

Writes bench/results.json, bench/results.md (the README table) and bench/results.png.
"""

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BIN = os.path.join(ROOT, "target", "release", "rentcache")
TTL = 5
ORIGIN_LATENCY_MS = 150
SMALL = "/propertyadvertising.php?noimage=1&propref=2"              # ~2 KB JSON
LARGE = "/propertyadvertising.php?limit=20&noimage=1&rob=rent"      # ~40 KB JSON
SERVERS = ["rentcache", "nginx", "varnish"]
SERVER_CPU = "0"
LOAD_CPU = "1"
# The paced runs: each of the 50 connections waits this long before each request, which
# offers roughly a third of what the servers can take, so latency is measured below
# saturation (where it is the server's own, not queueing behind the other connections).
PACE_MS = 2


# ---------------------------------------------------------------- processes and tools

def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    # cmake builds pingora's zlib; the rest are the peers and the load generator.
    missing = [pkg for binary, pkg in (("nginx", "nginx-light"), ("varnishd", "varnish"), ("wrk", "wrk"),
                                       ("cmake", "cmake"))
               if shutil.which(binary) is None]
    if missing:
        print(f"installing {' '.join(missing)} from Debian")
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq"] + missing, stdout=subprocess.DEVNULL)
    try:
        import matplotlib  # noqa: F401  (the plot)
    except ImportError:
        print("installing matplotlib from PyPI (for bench/results.png)")
        sh([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    for binary in ("redis-server", "taskset"):
        if shutil.which(binary) is None:
            sys.exit(f"{binary} is needed (Debian: redis-server, util-linux)")


def build():
    print("building rentcache (release)")
    sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited before listening on {port}: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Proc:
    def __init__(self, cmd, cpu, port, env=None, log=None):
        self.log = open(log or os.devnull, "w")
        self.p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, **(env or {})), start_new_session=True)
        self.port = port
        wait_port(port, self.p)

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()


def http_get(port, path, timeout=60, headers=()):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path, headers=dict(h.split(": ", 1) for h in headers))
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body


def sim_stats(sim_port):
    return json.loads(http_get(sim_port, "/__sim/stats")[2])


def sim_calls(sim_port, target=None):
    s = sim_stats(sim_port)
    return s["total"] if target is None else s["by_target"].get(target, 0)


# ---------------------------------------------------------------- the three servers

def rentcache_config(work, port, admin_port, origin, redis_url=None, memory="1GiB", max_object="8MiB"):
    redis = f'redis:\n  url: "{redis_url}"\n  max_object_bytes: 64MiB\n' if redis_url else ""
    text = f"""
server: {{listen: ["127.0.0.1:{port}"], threads: 1, compression_level: 0}}
admin: {{listen: "127.0.0.1:{admin_port}"}}
upstream: {{base_url: "http://{origin}", max_concurrent: 0}}
memory: {{max_bytes: {memory}, max_object_bytes: {max_object}}}
refresh_ahead: {{hot_threshold: 0}}
warm: {{on_start: false}}
{redis}routes:
  - name: api
    match: {{path: /propertyadvertising.php}}
    ttl: {TTL}s
    stale_while_revalidate: 10m
    stale_if_error: 10m
    include_params: [rob, featured, noimage, onlyarea, propref, limit, page]
    body: json_array
  - name: media
    match: {{path: /propertymedia.php}}
    ttl: {TTL}s
    stale_while_revalidate: 10m
    stale_if_error: 10m
    include_params: [propref, filename]
"""
    path = os.path.join(work, f"rentcache-{port}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_server(name, work, origin, **kw):
    port = free_port()
    log = os.path.join(work, f"{name}-{port}.log")
    if name == "rentcache":
        admin = free_port()
        conf = rentcache_config(work, port, admin, origin, **kw)
        proc = Proc([BIN, "serve", "-c", conf], SERVER_CPU, port,
                    env={"RUST_LOG": "warn", "RENTCACHE_ADMIN_TOKEN": "bench"}, log=log)
        proc.admin = admin
        return proc
    host, oport = origin.split(":")
    if name == "nginx":
        d = os.path.join(work, f"nginx-{port}")
        for sub in ("", "tmp", "cache"):
            os.makedirs(os.path.join(d, "nginx", sub), exist_ok=True)
        text = open(os.path.join(BENCH, "peers", "nginx.conf.template")).read()
        for k, v in {"{{WORK}}": d, "{{ORIGIN}}": origin, "{{TTL}}": f"{TTL}s",
                     "{{NGINX_CACHE_PORT}}": str(port), "{{NGINX_STATIC_PORT}}": str(free_port()),
                     "{{STATIC_ROOT}}": d}.items():
            text = text.replace(k, v)
        text = text.replace("worker_processes 1;", "worker_processes 1;\nuser root;")
        conf = os.path.join(d, "nginx.conf")
        open(conf, "w").write(text)
        return Proc(["nginx", "-p", d + "/nginx/", "-c", conf], SERVER_CPU, port, log=log)
    if name == "varnish":
        d = os.path.join(work, f"varnish-{port}")
        os.makedirs(d, exist_ok=True)
        text = open(os.path.join(BENCH, "peers", "varnish.vcl.template")).read()
        for k, v in {"{{ORIGIN_HOST}}": host, "{{ORIGIN_PORT}}": oport, "{{TTL}}": f"{TTL}s",
                     "{{WORK}}": d}.items():
            text = text.replace(k, v)
        vcl = os.path.join(d, "varnish.vcl")
        open(vcl, "w").write(text)
        return Proc(["varnishd", "-F", "-j", "none", "-n", os.path.join(d, "n"), "-a", f"127.0.0.1:{port}",
                     "-f", vcl, "-s", "malloc,1g", "-p", "thread_pools=1"], SERVER_CPU, port, log=log)
    raise ValueError(name)


# ---------------------------------------------------------------- measurements

def cpu_ticks():
    """(busy, idle) jiffies of the server's and the load's core."""
    ticks = {}
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] in (f"cpu{SERVER_CPU}", f"cpu{LOAD_CPU}"):
            v = list(map(int, f[1:]))
            ticks[f[0]] = (v[0] + v[1] + v[2] + v[5] + v[6], v[3] + v[4])
    return ticks


def busy_percent(before, after, cpu):
    busy = after[f"cpu{cpu}"][0] - before[f"cpu{cpu}"][0]
    idle = after[f"cpu{cpu}"][1] - before[f"cpu{cpu}"][1]
    return 100.0 * busy / max(1, busy + idle)


def wrk(port, path, duration, conns=50, script="wrk_report.lua", extra=(), headers=()):
    # How busy each core was tells which side limits a run: a load core near 100% means
    # the figure is the load generator's ceiling, not the server's.
    before = cpu_ticks()
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s"]
        + [a for h in headers for a in ("-H", h)] + [
         "-s", os.path.join(BENCH, script), f"http://127.0.0.1:{port}{path}"] + (["--"] + list(extra) if extra else []),
        check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    after = cpu_ticks()
    r["server_cpu"] = busy_percent(before, after, SERVER_CPU)
    r["load_cpu"] = busy_percent(before, after, LOAD_CPU)
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    # The server's cost per request, whichever side was the limit (a saturated load core
    # caps req/s, not this).
    r["server_us"] = r["server_cpu"] / 100 * 1e6 / max(1.0, r["rps"])
    for k in ("p50", "p99", "p999", "max"):
        r[k] = r[k] / 1000.0  # ms
    return r


def paced(port, path, duration):
    return wrk(port, path, duration, script="wrk_paced.lua", extra=[str(PACE_MS)])


def burst(port, path, n=200):
    """n clients released together on one path; latencies in ms and statuses."""
    barrier = threading.Barrier(n)
    lat, codes = [0.0] * n, [0] * n

    def one(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.connect()
        barrier.wait()
        t0 = time.perf_counter()
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            codes[i] = r.status
        except OSError:
            codes[i] = 0
        lat[i] = (time.perf_counter() - t0) * 1000
        c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = sorted(lat)
    return {"p50": s[n // 2], "p99": s[int(n * 0.99) - 1], "max": s[-1],
            "ok": sum(1 for c in codes if c == 200)}


def mix_urls(sim_port):
    """~2,000 URLs shaped like Rentman's traffic (../shared/rentman/API.md), by share.

    Websites add parameters the API ignores (`beds`, `minprice`, `utm_*`): they are part of
    the URL for every server, and whether a cache sees through them is part of the result."""
    ds = json.loads(http_get(sim_port, "/__sim/dataset")[2])
    ranked = sorted(ds["properties"], key=lambda p: (not p.get("featured"), p["propref"]))
    api, media = "/propertyadvertising.php", "/propertymedia.php"
    utm = ["", "&utm_source=newsletter", "&utm_source=facebook", "&utm_campaign=spring"]
    rent = [f"{api}?rob=rent&limit=25&page={page}{beds}{price}"
            for page in (1, 2) for beds in ("", "&beds=1", "&beds=2", "&beds=3")
            for price in ("", "&minprice=500", "&minprice=750", "&minprice=1000", "&minprice=1500")]
    return [
        (0.30, [f"{api}?featured=1&noimage=1", f"{api}?featured=1"]
         + [f"{api}?featured=1&noimage=1{u}" for u in utm[1:]]),
        (0.25, rent),
        (0.10, [f"{api}?rob=sale&limit=25&page=1{u}" for u in utm]),
        (0.15, [f"{api}?propref={p['propref']}&noimage=1{u}" for p in ranked for u in utm]),
        (0.15, [f"{media}?filename=" + urllib.parse.quote(m["filename"])
                for p in ranked for m in p["media"] if m["imgorder"] < 9000]),
        (0.04, [f"{media}?propref={p['propref']}" for p in ranked]),
        (0.01, [f"{api}?onlyarea=1"]),
    ]


def mix_sequence(sim_port, count, seed=11):
    """A fixed request sequence: a category by its share, then a URL by Zipf rank within it."""
    groups = mix_urls(sim_port)
    rng = random.Random(seed)
    weights = [[1.0 / (rank + 1) for rank in range(len(urls))] for _, urls in groups]
    picks = rng.choices(range(len(groups)), weights=[share for share, _ in groups], k=count)
    seq = [rng.choices(groups[g][1], weights=weights[g])[0] for g in picks]
    return seq, sum(len(urls) for _, urls in groups)


def replay(port, seq, conns=16):
    """Sends every request of `seq` once, in order, over `conns` keep-alive connections."""
    cursor = iter(range(len(seq)))
    lock = threading.Lock()
    failures = [0]

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            try:
                c.request("GET", seq[i])
                r = c.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = False
            if not ok:
                with lock:
                    failures[0] += 1
        c.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": len(seq), "failures": failures[0], "seconds": time.perf_counter() - t0}


def vm_hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_under_budget(work, sim_bin_port):
    """Fills a 256 MiB memory tier past the brim; reports the peak RSS."""
    sim = Proc([BIN, "simulate", "--port", str(sim_bin_port), "--latency-ms", "0", "--properties", "500",
                "--threads", "1"], LOAD_CPU, sim_bin_port, log=os.path.join(work, "sim-rss.log"))
    try:
        server = start_server("rentcache", work, f"127.0.0.1:{sim_bin_port}", memory="256MiB", max_object="8MiB")
        try:
            ds = json.loads(http_get(sim_bin_port, "/__sim/dataset")[2])
            paths = ["/propertymedia.php?filename=" + urllib.parse.quote(m["filename"])
                     for p in ds["properties"] for m in p["media"]]
            paths += [f"/propertymedia.php?propref={p['propref']}" for p in ds["properties"]]
            total = 0
            lock = threading.Lock()

            def worker(chunk):
                nonlocal total
                c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                for path in chunk:
                    c.request("GET", path)
                    r = c.getresponse()
                    n = len(r.read())
                    with lock:
                        total += n
                c.close()

            chunks = [paths[i::4] for i in range(4)]
            ts = [threading.Thread(target=worker, args=(c,)) for c in chunks]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            c = http.client.HTTPConnection("127.0.0.1", server.admin, timeout=60)
            c.request("GET", "/stats", headers={"Authorization": "Bearer bench"})
            memory = json.loads(c.getresponse().read())["tiers"]["memory"]
            return {"budget_mib": 256, "bytes_through_mib": total / 2**20,
                    "memory_tier_mib": memory["bytes"] / 2**20,
                    "peak_rss_mib": vm_hwm_kib(server.pid) / 1024}
        finally:
            server.stop()
    finally:
        sim.stop()


# ---------------------------------------------------------------- the run

def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s runs")
    ap.add_argument("--mix-requests", type=int, default=40000, help="length of the traffic-mix sequence")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 3
        args.mix_requests = min(args.mix_requests, 15000)
    if os.cpu_count() < 2:
        sys.exit("needs 2 cores: one for the servers, one for the load")
    ensure_tools()
    if not args.no_build:
        build()
    work = tempfile.mkdtemp(prefix="rentcache-bench-")
    sim_port = free_port()
    sim = Proc([BIN, "simulate", "--port", str(sim_port), "--latency-ms", str(ORIGIN_LATENCY_MS),
                "--latency-sigma", "0", "--threads", "1", "--properties", "200"], LOAD_CPU, sim_port, log=os.path.join(work, "sim.log"))
    origin = f"127.0.0.1:{sim_port}"
    results = {"rounds": [], "machine": machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
               "command": " ".join(["python3", "bench/compare.py"] + sys.argv[1:])}
    try:
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}")
            r = {}
            for name in SERVERS:
                srv = start_server(name, work, origin)
                try:
                    for label, path in (("small", SMALL), ("large", LARGE)):
                        http_get(srv.port, path)
                        http_get(srv.port, path)
                        # Keep entries fresh for the whole run: TTL is 5 s, SWR keeps serving.
                        r[f"{name}.{label}"] = wrk(srv.port, path, args.duration)
                        print(f"  {name:9} {label}: {r[f'{name}.{label}']['rps']:9.0f} req/s  "
                              f"p99 {r[f'{name}.{label}']['p99']:.2f} ms")
                    r[f"{name}.paced"] = paced(srv.port, SMALL, args.duration)
                    print(f"  {name:9} paced small: {r[f'{name}.paced']['rps']:9.0f} req/s  "
                          f"p99 {r[f'{name}.paced']['p99']:.2f} ms")
                    # 200 concurrent requests for one cold key, then for one stale key.
                    cold = f"/propertyadvertising.php?noimage=1&propref={10 + rnd}"
                    before = sim_calls(sim_port, cold)
                    b = burst(srv.port, cold)
                    b["upstream_calls"] = sim_calls(sim_port, cold) - before
                    r[f"{name}.cold"] = b
                    time.sleep(TTL + 1.5)
                    before = sim_calls(sim_port, cold)
                    b = burst(srv.port, cold)
                    time.sleep(ORIGIN_LATENCY_MS / 1000 + 0.5)  # let the background refresh land
                    b["upstream_calls"] = sim_calls(sim_port, cold) - before
                    r[f"{name}.stale"] = b
                    print(f"  {name:9} cold: {r[f'{name}.cold']['upstream_calls']} call(s), "
                          f"p50 {r[f'{name}.cold']['p50']:.0f} ms; stale: {r[f'{name}.stale']['upstream_calls']} "
                          f"call(s), p99 {r[f'{name}.stale']['p99']:.1f} ms")
                finally:
                    srv.stop()
            # Redis-tier hits: memory holds nothing (objects over 1 KiB are not kept there).
            redis_port = free_port()
            redis = Proc(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], LOAD_CPU, redis_port, log=os.path.join(work, "redis.log"))
            try:
                srv = start_server("rentcache", work, origin, redis_url=f"redis://127.0.0.1:{redis_port}",
                                   memory="1MiB", max_object="1KiB")
                try:
                    time.sleep(1)
                    http_get(srv.port, SMALL)
                    r["rentcache.redis"] = wrk(srv.port, SMALL, args.duration)
                    print(f"  rentcache redis-tier small: {r['rentcache.redis']['rps']:.0f} req/s  "
                          f"p99 {r['rentcache.redis']['p99']:.2f} ms")
                    r["rentcache.redis_paced"] = paced(srv.port, SMALL, args.duration)
                    print(f"  rentcache redis-tier paced: {r['rentcache.redis_paced']['rps']:.0f} req/s  "
                          f"p99 {r['rentcache.redis_paced']['p99']:.2f} ms")
                finally:
                    srv.stop()
            finally:
                redis.stop()
            results["rounds"].append(r)

        # The traffic mix (once: it is about counts, not speed), each server from cold, the
        # same fixed sequence for each.
        seq, distinct = mix_sequence(sim_port, args.mix_requests)
        results["mix"] = {"distinct_urls": distinct, "requests": len(seq)}
        for name in SERVERS:
            srv = start_server(name, work, origin)
            try:
                before = sim_calls(sim_port)
                w = replay(srv.port, seq)
                calls = sim_calls(sim_port) - before
                results["mix"][name] = {"requests": w["requests"], "failures": w["failures"],
                                        "upstream_calls": calls, "per_1000": 1000 * calls / w["requests"],
                                        "hit_ratio": 1 - calls / w["requests"], "seconds": w["seconds"]}
                print(f"  mix {name:9}: {w['requests']} requests ({w['failures']} failed) in "
                      f"{w['seconds']:.1f} s, {calls} upstream calls "
                      f"({results['mix'][name]['per_1000']:.2f} per 1,000)")
            finally:
                srv.stop()
        results["rss"] = rss_under_budget(work, free_port())
        print(f"  peak RSS under a 256 MiB budget: {results['rss']['peak_rss_mib']:.0f} MiB")
    finally:
        sim.stop()
    summarize(results)


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def summarize(results):
    rounds = results["rounds"]
    agg = {}
    for key in rounds[0]:
        for metric in rounds[0][key]:
            vals = [r[key][metric] for r in rounds if key in r]
            agg.setdefault(key, {})[metric] = median(vals)
    ratios = {}
    for label in ("small", "large"):
        for peer in ("nginx", "varnish"):
            ratios[f"{label}.vs_{peer}"] = median(
                [r[f"rentcache.{label}"]["rps"] / r[f"{peer}.{label}"]["rps"] for r in rounds])
            # How many times less server core time rentcache spends per request.
            ratios[f"{label}.cost_vs_{peer}"] = median(
                [r[f"{peer}.{label}"]["server_us"] / r[f"rentcache.{label}"]["server_us"] for r in rounds])
    results["median"], results["ratios"] = agg, ratios
    with open(os.path.join(BENCH, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)

    lines = [f"Measured {results['date']} on {results['machine']} with `{results['command']}`: "
             f"{len(rounds)} round(s), medians; each server pinned to core 0 with one worker, wrk "
             f"(1 thread, 50 keep-alive connections) and the origin (simulator, {ORIGIN_LATENCY_MS} ms) on core 1.",
             "",
             "| measurement | rentcache | nginx | Varnish | rentcache / nginx | rentcache / Varnish |",
             "|---|---|---|---|---|---|"]
    for label, size in (("small", "~2 KB"), ("large", "~40 KB")):
        row = [agg[f"{s}.{label}"] for s in SERVERS]
        lines.append(f"| memory hit {size}: req/s | " + " | ".join(f"{x['rps']:,.0f}" for x in row)
                     + f" | {ratios[label + '.vs_nginx']:.2f}x | {ratios[label + '.vs_varnish']:.2f}x |")
        lines.append(f"| memory hit {size}: p50 / p99 / p99.9 ms | "
                     + " | ".join(f"{x['p50']:.2f} / {x['p99']:.2f} / {x['p999']:.2f}" for x in row) + " | | |")
        lines.append(f"| memory hit {size}: busy % of server core / load core | "
                     + " | ".join(f"{x['server_cpu']:.0f} / {x['load_cpu']:.0f}" for x in row) + " | | |")
        lines.append(f"| memory hit {size}: server core time per request, µs (ratio: the peer's / rentcache's) | "
                     + " | ".join(f"{x['server_us']:.1f}" for x in row)
                     + f" | {ratios[label + '.cost_vs_nginx']:.2f}x | {ratios[label + '.cost_vs_varnish']:.2f}x |")
    row = [agg[f"{s}.paced"] for s in SERVERS]
    lines.append(f"| memory hit ~2 KB, paced (each connection pausing {PACE_MS} ms on average): "
                 "req/s, p50 / p99 / p99.9 ms | "
                 + " | ".join(f"{x['rps']:,.0f}, {x['p50']:.2f} / {x['p99']:.2f} / {x['p999']:.2f}" for x in row)
                 + " | | |")
    rd, rp = agg["rentcache.redis"], agg["rentcache.redis_paced"]
    lines.append(f"| Redis-tier hit ~2 KB (memory off): req/s, p50 / p99 / p99.9 ms | "
                 f"{rd['rps']:,.0f}, {rd['p50']:.2f} / {rd['p99']:.2f} / {rd['p999']:.2f} | | | | |")
    lines.append(f"| Redis-tier hit ~2 KB, paced: req/s, p50 / p99 / p99.9 ms | "
                 f"{rp['rps']:,.0f}, {rp['p50']:.2f} / {rp['p99']:.2f} / {rp['p999']:.2f} | | | | |")
    for kind, title in (("cold", "200 concurrent, one cold key"), ("stale", "200 concurrent, one stale key")):
        row = [agg[f"{s}.{kind}"] for s in SERVERS]
        lines.append(f"| {title}: upstream calls, p50 / p99 ms | "
                     + " | ".join(f"{x['upstream_calls']:.0f}, {x['p50']:.0f} / {x['p99']:.0f}" for x in row) + " | | |")
    mix = results["mix"]
    lines.append(f"| traffic mix ({mix['requests']:,} requests over {mix['distinct_urls']:,} URLs, Zipf): "
                 "hit ratio, upstream calls per 1,000 | "
                 + " | ".join(f"{mix[s]['hit_ratio']:.4f}, {mix[s]['per_1000']:.2f}" for s in SERVERS) + " | | |")
    rss = results["rss"]
    lines.append(f"| peak RSS, 256 MiB memory budget filled ({rss['bytes_through_mib']:.0f} MiB through, "
                 f"{rss['memory_tier_mib']:.0f} MiB held) | {rss['peak_rss_mib']:.0f} MiB | | | | |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(BENCH, "results.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    plot(agg)


def plot(agg):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install matplotlib): no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [2, 2, 1]})
    colors = {"rentcache": "#2a7", "nginx": "#36c", "varnish": "#c63"}
    for ax, metric, title in ((axes[0], "rps", "memory hits: requests/s"),
                              (axes[1], "p99", "memory hits: p99 latency (ms)")):
        x = 0
        ticks, labels = [], []
        for label in ("small", "large"):
            for s in SERVERS:
                ax.bar(x, agg[f"{s}.{label}"][metric], color=colors[s], label=s if label == "small" else None)
                x += 1
            ticks.append(x - 2)
            labels.append({"small": "~2 KB", "large": "~40 KB"}[label])
            x += 1
        ax.set_xticks(ticks, labels)
        ax.set_title(title)
    for i, s in enumerate(SERVERS):
        axes[2].bar(i, agg[f"{s}.paced"]["p99"], color=colors[s])
    axes[2].set_xticks(range(len(SERVERS)), SERVERS)
    axes[2].set_title("~2 KB, paced: p99 (ms)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(BENCH, "results.png"), dpi=110)


if __name__ == "__main__":
    main()
