#!/usr/bin/env python3
"""Replays the Rentman traffic mix (../shared/rentman/API.md) against `rentcache demo` for a
fixed time and reports how much of it reached Rentman.

    python3 bench/mix.py [--duration 60] [--concurrency 16] [--latency-ms 350] [--importer]

It starts the demo (simulator + proxy, release build) on free loopback ports, sends the mix
from `--concurrency` keep-alive clients, then prints: client requests, upstream calls (counted
by the simulator), upstream calls per 1,000 client requests, the ideal for the run (distinct
canonical keys per TTL window: the fewest calls any cache could make), the hit ratio, and
latency percentiles overall and by cache status. Not a test: numbers depend on the machine.
"""

import argparse
import collections
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

# Shared process helpers (this script's folder is on sys.path when run as bench/mix.py).
from compare import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shipped routes (conf/rentcache.yaml): which parameters form the key, and the TTL.
ROUTES = [
    ("featured", lambda q: q.get("featured") == "1", ["featured", "noimage", "rob", "limit", "page"], 600),
    ("property", lambda q: bool(q.get("propref")), ["propref", "noimage"], 3600),
    ("areas", lambda q: q.get("onlyarea") == "1", ["onlyarea", "rob"], 6 * 3600),
    ("listings", lambda q: True, ["rob", "featured", "noimage", "limit", "page"], 300),
]
MEDIA = ("media", ["propref", "filename"], 86400)


def canonical(path_and_query):
    """The proxy's canonical key and TTL for a request of the mix (no key headers used)."""
    path, _, query = path_and_query.partition("?")
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if path == "/propertymedia.php":
        name, keep, ttl = MEDIA
    else:
        name, _, keep, ttl = next(r for r in ROUTES if r[1](params))
    kept = sorted((k, v) for k, v in params.items() if k in keep)
    return path + ("?" + urllib.parse.urlencode(kept) if kept else ""), ttl


def get_json(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body)


class Mix:
    """Draws requests with the shares of API.md, skewed toward featured properties."""

    def __init__(self, dataset, rng):
        self.rng = rng
        props = dataset["properties"]
        self.featured = [p["propref"] for p in props if p.get("featured")]
        self.others = [p["propref"] for p in props if not p.get("featured")]
        self.media = {p["propref"]: [m["filename"] for m in p["media"]] for p in props}

    def propref(self):
        # Half the detail traffic goes to the handful of featured properties; the rest
        # follows a Zipf-like skew over the others.
        if self.featured and self.rng.random() < 0.5:
            return self.rng.choice(self.featured)
        i = min(int(self.rng.paretovariate(1.2)) - 1, len(self.others) - 1)
        return self.others[i]

    def next(self):
        r = self.rng.random()
        if r < 0.30:
            return "/propertyadvertising.php?featured=1" + ("&noimage=1" if self.rng.random() < 0.7 else "")
        if r < 0.55:
            q = f"rob=rent&limit=25&page={self.rng.randint(1, 2)}"
            if self.rng.random() < 0.4:
                q += f"&beds={self.rng.randint(1, 3)}"
            return "/propertyadvertising.php?" + q
        if r < 0.65:
            return "/propertyadvertising.php?rob=sale&limit=25&page=1"
        if r < 0.80:
            return f"/propertyadvertising.php?propref={self.propref()}&noimage=1"
        if r < 0.95:
            for _ in range(10):
                files = self.media.get(self.propref()) or []
                if files:
                    return "/propertymedia.php?filename=" + urllib.parse.quote(self.rng.choice(files))
            return "/propertymedia.php?propref=1"
        if r < 0.99:
            return f"/propertymedia.php?propref={self.propref()}"
        return "/propertyadvertising.php?onlyarea=1"


def client(port, mix, until, results, lock):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    local = []
    while time.time() < until:
        path = mix.next()
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            status = r.getheader("x-cache-status", "-")
            code = r.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            status, code = "ERROR", 0
        local.append((time.time(), path, code, status, time.perf_counter() - t0))
    conn.close()
    with lock:
        results.extend(local)


def percentiles(values, ps=(50, 90, 99, 99.9)):
    if not values:
        return {p: float("nan") for p in ps}
    v = sorted(values)
    return {p: v[min(len(v) - 1, int(len(v) * p / 100))] for p in ps}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency-ms", type=int, default=350)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--importer", action="store_true",
                    help="add the hourly importer burst (full list with images, then every property's media) halfway")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "rentcache")
    port, sim_port, admin_port = free_port(), free_port(), free_port()
    demo = subprocess.Popen(
        [binary, "demo", "--port", str(port), "--sim-port", str(sim_port),
         "--admin-port", str(admin_port), "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, RUST_LOG="warn"))
    try:
        wait_port(port, demo)
        wait_port(sim_port, demo)
        dataset = get_json(sim_port, "/__sim/dataset")
        before = get_json(sim_port, "/__sim/stats")["total"]

        results, lock = [], threading.Lock()
        start = time.time()
        until = start + args.duration
        threads = [threading.Thread(target=client,
                                    args=(port, Mix(dataset, random.Random(args.seed + i)), until, results, lock))
                   for i in range(args.concurrency)]
        for t in threads:
            t.start()
        if args.importer:
            time.sleep(args.duration / 2)
            burst = ["/propertyadvertising.php"] + [
                f"/propertymedia.php?propref={p['propref']}" for p in dataset["properties"]]
            client_results = []
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            for path in burst:
                t0 = time.perf_counter()
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                client_results.append((time.time(), path, r.status, r.getheader("x-cache-status", "-"),
                                       time.perf_counter() - t0))
            with lock:
                results.extend(client_results)
        for t in threads:
            t.join()
        elapsed = time.time() - start
        upstream = get_json(sim_port, "/__sim/stats")["total"] - before
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            demo.kill()

    n = len(results)
    # The ideal: each canonical key fetched once per TTL window of the run.
    windows = set()
    for t, path, _, _, _ in results:
        key, ttl = canonical(path)
        windows.add((key, int((t - start) // ttl)))
    by_status = collections.defaultdict(list)
    for _, _, code, status, lat in results:
        by_status[status].append(lat)
    hits = sum(len(v) for s, v in by_status.items() if s in ("HIT", "UPDATING", "STALE", "REVALIDATED"))
    errors = sum(1 for r in results if r[2] == 0 or r[2] >= 500)

    print(f"rentcache traffic mix: {args.duration:.0f} s, {args.concurrency} clients, "
          f"simulated Rentman median latency {args.latency_ms} ms{', with importer burst' if args.importer else ''}")
    print(f"client requests          {n}  ({n / elapsed:.0f}/s, {errors} errors)")
    print(f"upstream calls           {upstream}")
    print(f"upstream per 1,000       {1000 * upstream / max(n, 1):.2f}")
    print(f"ideal per 1,000          {1000 * len(windows) / max(n, 1):.2f}  "
          f"({len(windows)} distinct keys per TTL window)")
    print(f"hit ratio                {hits / max(n, 1):.4f}")
    print("latency (ms)             p50      p90      p99    p99.9    count")
    rows = [("all", [r[4] for r in results])] + sorted(by_status.items())
    for name, lats in rows:
        p = percentiles(lats)
        print(f"  {name:<22}" + "".join(f"{p[q] * 1000:8.2f} " for q in (50, 90, 99, 99.9)) + f"{len(lats):8d}")


if __name__ == "__main__":
    main()
