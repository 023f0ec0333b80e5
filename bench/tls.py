#!/usr/bin/env python3
"""Cache hits over HTTPS: rentcache's TLS listener beside nginx with the same certificate.

    python3 bench/tls.py                 # 3 rounds (about 4 minutes on 2 cores)
    python3 bench/tls.py --rounds 1 --seconds 3

The origin is rentcache's simulator over plain HTTP; rentcache (one thread) and nginx (one
worker, proxy_cache, `listen ... ssl http2`) both serve the test certificate of tests/tls
(EC P-256) and keep every answer for an hour, so after a warm-up every request is a hit.
Each server is pinned to core 0, the load generator to core 1. HTTP/1.1 over TLS is
measured with wrk (50 keep-alive connections); HTTP/2 with h2load (50 connections, 10
streams each). Two answers: ~2 KB and ~40 KB of JSON. Ratios are taken within a round,
medians reported.

Writes bench/tls.json and bench/tls.md (the README table).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
from compare import BIN, BENCH, ROOT, Proc, free_port, sh  # noqa: E402

TLS = os.path.join(ROOT, "tests", "tls")
CERT, KEY = os.path.join(TLS, "origin.pem"), os.path.join(TLS, "origin.key")
PATHS = {"2 KB": compare.SMALL, "40 KB": compare.LARGE}

NGINX = """worker_processes 1;
daemon off;
master_process on;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; use epoll; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    gzip off;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=api:64m max_size=4g inactive=1h use_temp_path=off;
    upstream origin {{ server {origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache api;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""


def ensure_tools():
    missing = [pkg for binary, pkg in (("nginx", "nginx-light"), ("wrk", "wrk"), ("h2load", "nghttp2-client"),
                                       ("cmake", "cmake")) if not shutil.which(binary)]
    if missing:
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq"] + missing)


def start_rentcache(work, origin):
    port, tls_port, admin = free_port(), free_port(), free_port()
    text = f"""server:
  listen: ["127.0.0.1:{port}"]
  threads: 1
  compression_level: 0
  tls: {{listen: ["127.0.0.1:{tls_port}"], cert: "{CERT}", key: "{KEY}", http2: true}}
admin: {{listen: "127.0.0.1:{admin}"}}
upstream: {{base_url: "http://{origin}"}}
memory: {{max_bytes: 1GiB}}
refresh_ahead: {{hot_threshold: 0}}
warm: {{on_start: false}}
routes:
  - {{name: api, match: {{path: /propertyadvertising.php}}, ttl: 1h, body: json_array}}
"""
    conf = os.path.join(work, "rentcache.yaml")
    open(conf, "w").write(text)
    p = Proc([BIN, "serve", "-c", conf], compare.SERVER_CPU, port, env={"RUST_LOG": "warn"},
             log=os.path.join(work, "rentcache.log"))
    compare.wait_port(tls_port, p.p)
    p.tls_port = tls_port
    return p


def start_nginx(work, origin):
    d = os.path.join(work, "nginx")
    for sub in ("", "tmp", "cache"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    open(conf, "w").write(NGINX.format(d=d, origin=origin, port=port, cert=CERT, key=KEY))
    p = Proc(["nginx", "-p", d + "/", "-c", conf], compare.SERVER_CPU, port, log=os.path.join(work, "nginx.log"))
    p.tls_port = port
    return p


def warm(port, path):
    # curl speaks both; the second answer must be a hit.
    for _ in range(3):
        out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-D", "-", f"https://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, check=True).stdout
    if "HIT" not in out:
        raise RuntimeError(f"{port}{path} is not a hit after warming:\n{out}")


def h1(port, path, seconds):
    out = subprocess.run(
        ["taskset", "-c", compare.LOAD_CPU, "wrk", "-t1", "-c50", f"-d{seconds}s", "--timeout", "10s",
         "-s", os.path.join(BENCH, "wrk_report.lua"), f"https://127.0.0.1:{port}{path}"],
        check=True, capture_output=True, text=True).stdout
    r = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    if r["errors"] or r["non2xx"]:
        raise RuntimeError(f"wrk errors: {r}")
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50"] / 1000, "p99_ms": r["p99"] / 1000}


def h2(port, path, seconds):
    out = subprocess.run(
        ["taskset", "-c", compare.LOAD_CPU, "h2load", "-c50", "-m10", "-t1", f"-D{seconds}",
         f"https://127.0.0.1:{port}{path}"],
        check=True, capture_output=True, text=True).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if not m or not ok or int(ok.group(2)):
        raise RuntimeError(f"h2load:\n{out}")
    if "h2" not in out.split("Application protocol:")[-1][:10]:
        raise RuntimeError(f"not HTTP/2:\n{out}")
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return {"rps": float(m.group(1)), "mean": mean.group(1) if mean else "?"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    ensure_tools()
    if not args.no_build:
        compare.build()
    work = tempfile.mkdtemp(prefix="rc-tls-")
    sim_port = free_port()
    sim = Proc([BIN, "simulate", "--port", str(sim_port), "--latency-ms", "0", "--threads", "1"],
               compare.LOAD_CPU, sim_port, log=os.path.join(work, "sim.log"))
    origin = f"127.0.0.1:{sim_port}"
    servers = {"rentcache": start_rentcache(work, origin), "nginx": start_nginx(work, origin)}
    rows = []
    try:
        for p in servers.values():
            for path in PATHS.values():
                warm(p.tls_port, path)
        for rnd in range(args.rounds):
            for size, path in PATHS.items():
                for proto, run in (("HTTP/1.1", h1), ("HTTP/2", h2)):
                    got = {name: run(p.tls_port, path, args.seconds) for name, p in servers.items()}
                    rows.append({"round": rnd, "size": size, "protocol": proto, **{
                        f"{name}_{k}": v for name, r in got.items() for k, v in r.items()}})
                    print(rows[-1], flush=True)
    finally:
        for p in list(servers.values()) + [sim]:
            p.stop()
    summary = []
    for size in PATHS:
        for proto in ("HTTP/1.1", "HTTP/2"):
            rs = [r for r in rows if r["size"] == size and r["protocol"] == proto]
            summary.append({
                "size": size, "protocol": proto,
                "rentcache_rps": statistics.median(r["rentcache_rps"] for r in rs),
                "nginx_rps": statistics.median(r["nginx_rps"] for r in rs),
                "ratio": statistics.median(r["rentcache_rps"] / r["nginx_rps"] for r in rs),
            })
    json.dump({"rows": rows, "summary": summary, "machine": compare.machine()},
              open(os.path.join(BENCH, "tls.json"), "w"), indent=1)
    lines = ["| answer | protocol | rentcache req/s | nginx req/s | rentcache / nginx |", "|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['size']} | {s['protocol']} | {s['rentcache_rps']:,.0f} | {s['nginx_rps']:,.0f} "
                     f"| {s['ratio']:.2f}x |")
    open(os.path.join(BENCH, "tls.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
