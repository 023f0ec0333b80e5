#!/usr/bin/env python3
"""Media files: variant generation against libvips, memory hits against nginx's static
files, and the bytes a listing page saves, measured in the same run.

    python3 bench/media.py                 # full run (about 5 minutes on 2 cores)
    python3 bench/media.py --quick         # short runs (a smoke test)

Builds rentcache (release; CARGO_TARGET_DIR is honoured), installs libvips-tools,
libvips-dev, nginx-light and wrk from Debian when missing, starts rentcache's simulator and
takes its photos (1600x1200 JPEGs, one in four with EXIF orientation 6) as files.

1. Variant generation, one core each, in process, per file: `rentcache thumbnail` (what
   /media/VARIANT/FILE runs) against libvips' own thumbnail (`vips_thumbnail_buffer` +
   `jpegsave`, bench/vips_time.c, VIPS_CONCURRENCY=1), the same files, widths and quality,
   interleaved; p50/p99 per variant. `vipsthumbnail` itself (one process over all files)
   is timed too, as a mean per file including its start.
2. Memory hits of a variant and an original over HTTP/1.1 keep-alive (wrk, 50
   connections, server on core 0, load on core 1) against nginx serving the same bytes as
   static files (sendfile), interleaved per round: req/s and server CPU us per request.
3. Bytes of a 25-card listing page: the photos as Rentman has them against card variants,
   JPEG and WebP.

Writes bench/media.json, bench/media.md (the README table) and bench/media.png.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (processes, wrk and CPU accounting shared with compare.py)

ROOT = compare.ROOT
BENCH = compare.BENCH
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BIN = os.path.join(TARGET, "release", "rentcache")
compare.BIN = BIN
VARIANTS = {"thumbnail": 320, "card": 640, "hero": 1600}
SERVERS = ("rentcache", "rentcache_memfd", "nginx")
SERVER_LABELS = {"rentcache": "rentcache (default `body_dir: auto`)",
                 "rentcache_memfd": "rentcache, `body_dir: memory`", "nginx": "nginx static"}
QUALITY = 80
# A browser's request head for an image (Chrome's, without image/avif and image/webp in
# Accept, so that rentcache sends the same JPEG bytes nginx does).
BROWSER_HEAD = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36",
    "Accept: image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-GB,en;q=0.9",
    "Referer: https://agent.example/lettings",
    "Sec-Fetch-Dest: image",
    "Sec-Fetch-Mode: no-cors",
    "Sec-Fetch-Site: cross-site",
    'Sec-Ch-Ua: "Chromium";v="131"',
    "Sec-Ch-Ua-Mobile: ?0",
    'Sec-Ch-Ua-Platform: "Linux"',
    "Cookie: _ga=GA1.1.123456789.1700000000",
)
# Paced hits: each of wrk's 50 connections pauses this long on average before each request
# (about 10,000 requests/s in all, below what every server takes for both bodies).
PACE_MS = 5


def ensure_tools():
    missing = [pkg for binary, pkg in (("vipsthumbnail", "libvips-tools"), ("nginx", "nginx-light"),
                                       ("wrk", "wrk"), ("gcc", "gcc"), ("pkg-config", "pkg-config"))
               if shutil.which(binary) is None]
    if subprocess.run(["pkg-config", "--exists", "vips"], capture_output=True).returncode != 0:
        missing.append("libvips-dev")
    for lib, pkg in (("libturbojpeg", "libturbojpeg0-dev"), ("libwebp", "libwebp-dev")):
        if subprocess.run(["pkg-config", "--exists", lib], capture_output=True).returncode != 0:
            missing.append(pkg)
    if missing:
        print("installing", " ".join(missing))
        compare.sh(["apt-get", "update", "-qq"])
        compare.sh(["apt-get", "install", "-y", "-qq"] + missing)


def build(work):
    print("building rentcache (release) and the libvips timer")
    compare.sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    vips_time = os.path.join(work, "vips_time")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "vips"], check=True, capture_output=True,
                           text=True).stdout.split()
    compare.sh(["gcc", "-O2", os.path.join(BENCH, "vips_time.c")] + flags + ["-o", vips_time])
    return vips_time


def photos(sim_port, work, limit):
    """The simulator's photos as files: (path, propref) for photo1..photo9 of the first
    properties, decoded from propertymedia.php's base64."""
    _, _, body = compare.http_get(sim_port, "/propertyadvertising.php?noimage=1")
    out = []
    d = os.path.join(work, "photos")
    os.makedirs(d, exist_ok=True)
    for record in json.loads(body):
        for i in range(1, 10):
            name = (record.get(f"photo{i}") or "").strip()
            if not name or len(out) >= limit:
                continue
            _, _, media = compare.http_get(sim_port, "/propertymedia.php?filename=" + urllib.parse.quote(name))
            import base64
            data = base64.b64decode("".join(json.loads(media)[0]["base64data"].split()))
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(data)
            out.append(path)
    return out


def session_cpu_s(sid):
    """CPU seconds (user + system) of every process in session `sid` (the server and, for
    nginx, its worker): its own cost, whatever else runs on its core."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, session, ... utime (12th), stime (13th).
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def wrk_own_cpu(srv, path, duration, pace_ms=None, headers=()):
    """compare.wrk, with the server's CPU per request from its own processes' accounting
    (this machine's cores are shared with other work, which /proc/stat would count). With
    `pace_ms`, each connection pauses that long on average before each request: every server
    then gets the same requests per second, below what any of them can take."""
    before = session_cpu_s(srv.pid)
    if pace_ms:
        r = compare.wrk(srv.port, path, duration, script="wrk_paced.lua", extra=[str(pace_ms)],
                        headers=headers)
    else:
        r = compare.wrk(srv.port, path, duration, headers=headers)
    used = session_cpu_s(srv.pid) - before
    r["core_us"] = r["server_us"]
    r["server_us"] = used * 1e6 / max(1, r["requests"])
    return r


def memory_kib(pid):
    """The server's resident memory, and how much of it is shared memory (memory files)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssShmem"):
                out[k] = int(v.split()[0])
    return {"rss_kib": out.get("VmRSS", 0), "shmem_kib": out.get("RssShmem", 0)}


def lines(cmd, env=None):
    out = subprocess.run(["taskset", "-c", compare.SERVER_CPU] + cmd, check=True, capture_output=True, text=True,
                         env=dict(os.environ, **(env or {}))).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def variant_times(files, vips_time, repeat, rounds):
    """Per variant: rentcache's and libvips' per-file times (us), interleaved by round."""
    res = {}
    vips_env = {"VIPS_CONCURRENCY": "1"}
    for name, width in VARIANTS.items():
        ours, theirs, ours_webp, theirs_webp = [], [], [], []
        sizes = {}
        for _ in range(rounds):
            o = lines([BIN, "thumbnail", "--width", str(width), "--quality", str(QUALITY), "--repeat", str(repeat)]
                      + files)
            v = lines([vips_time, str(width), str(QUALITY), "jpeg", str(repeat)] + files, vips_env)
            ow = lines([BIN, "thumbnail", "--webp", "--width", str(width), "--quality", str(QUALITY),
                        "--repeat", str(repeat)] + files)
            vw = lines([vips_time, str(width), str(QUALITY), "webp", str(repeat)] + files, vips_env)
            ours += [x["us"] for x in o]
            theirs += [x["us"] for x in v]
            ours_webp += [x["us"] for x in ow]
            theirs_webp += [x["us"] for x in vw]
            sizes = {"rentcache_jpeg": statistics.median(x["bytes"] for x in o),
                     "vips_jpeg": statistics.median(x["bytes"] for x in v),
                     "rentcache_webp": statistics.median(x["bytes"] for x in ow),
                     "vips_webp": statistics.median(x["bytes"] for x in vw)}
            dims = {(x["width"], x["height"]) for x in o} | {(x["width"], x["height"]) for x in v}
        # vipsthumbnail itself: one process over every file (its start included).
        outdir = tempfile.mkdtemp(dir=os.path.dirname(files[0]))
        t0 = time.perf_counter()
        subprocess.run(["taskset", "-c", compare.SERVER_CPU, "vipsthumbnail", "-s", f"{width}x", "-o",
                        os.path.join(outdir, f"%s.jpg[Q={QUALITY},strip]")] + files, check=True,
                       env=dict(os.environ, **vips_env))
        cli_mean = (time.perf_counter() - t0) * 1e6 / len(files)
        shutil.rmtree(outdir)
        res[name] = {
            "width": width, "files": len(files), "samples": len(ours),
            "rentcache_p50": pct(ours, 50), "rentcache_p99": pct(ours, 99),
            "vips_p50": pct(theirs, 50), "vips_p99": pct(theirs, 99),
            "rentcache_webp_p50": pct(ours_webp, 50), "rentcache_webp_p99": pct(ours_webp, 99),
            "vips_webp_p50": pct(theirs_webp, 50), "vips_webp_p99": pct(theirs_webp, 99),
            "vipsthumbnail_cli_mean": cli_mean, "sizes": sizes, "dims": sorted(dims),
        }
        r = res[name]
        print(f"  {name:9} jpeg p50 {r['rentcache_p50'] / 1000:6.2f} ms vs libvips {r['vips_p50'] / 1000:6.2f} ms "
              f"(p99 {r['rentcache_p99'] / 1000:.2f} vs {r['vips_p99'] / 1000:.2f}); webp p50 "
              f"{r['rentcache_webp_p50'] / 1000:.2f} vs {r['vips_webp_p50'] / 1000:.2f} ms; "
              f"vipsthumbnail {cli_mean / 1000:.2f} ms/file")
    return res


def rentcache_config(work, port, admin, origin, body_dir=None):
    memory = "{max_bytes: 1GiB" + (f", body_dir: {body_dir}" if body_dir else "") + "}"
    text = f"""
server: {{listen: ["127.0.0.1:{port}"], threads: 1, compression_level: 0}}
admin: {{listen: "127.0.0.1:{admin}"}}
upstream: {{base_url: "http://{origin}", max_concurrent: 0}}
memory: {memory}
refresh_ahead: {{hot_threshold: 0}}
warm: {{on_start: false}}
media: {{quality: {QUALITY}}}
routes:
  - name: media
    match: {{path: /propertymedia.php}}
    ttl: 1d
    stale_while_revalidate: 1d
    include_params: [propref, filename]
    body: media
"""
    path = os.path.join(work, f"rentcache-{port}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_rentcache(work, origin, body_dir=None):
    port, admin = compare.free_port(), compare.free_port()
    conf = rentcache_config(work, port, admin, origin, body_dir)
    return compare.Proc([BIN, "serve", "-c", conf], compare.SERVER_CPU, port, env={"RUST_LOG": "warn"},
                        log=os.path.join(work, f"rentcache-{port}.log"))


def start_nginx(work, files):
    """nginx with one worker serving `files` ({name: bytes}) from a static root."""
    port = compare.free_port()
    d = os.path.join(work, f"nginx-{port}")
    root = os.path.join(d, "root")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    os.makedirs(root, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
user root;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; use epoll; }}
http {{
    default_type image/jpeg;
    access_log off;
    server_tokens off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        add_header Cache-Control "public, max-age=31536000, immutable";
    }}
}}
""")
    return compare.Proc(["nginx", "-p", d + "/", "-c", conf], compare.SERVER_CPU, port,
                        log=os.path.join(work, f"nginx-{port}.log"))


def hits(work, origin, photo_names, rounds, duration):
    """Memory hits of a variant (~40 KB: the largest variant under 64 KB) and an original
    (the photo nearest 200 KB), rentcache against nginx static files, each round both."""
    srv = start_rentcache(work, origin)
    try:
        # The original nearest 200 KB, and the variant nearest 40 KB among its variants.
        originals = {}
        for name in photo_names:
            status, _, body = compare.http_get(srv.port, "/media/" + urllib.parse.quote(name))
            assert status == 200, status
            originals[name] = body
        original = min(originals, key=lambda n: abs(len(originals[n]) - 200_000))
        variants = {}
        for v in VARIANTS:
            for name in photo_names[:20]:
                status, h, body = compare.http_get(srv.port, f"/media/{v}/" + urllib.parse.quote(name))
                assert status == 200, (status, body[:200])
                variants[(v, name)] = body
        vkey = min(variants, key=lambda k: abs(len(variants[k]) - 40_000))
        vpath = f"/media/{vkey[0]}/{vkey[1]}"
        targets = {
            "variant": (vpath, variants[vkey], ()),
            "variant, browser head": (vpath, variants[vkey], BROWSER_HEAD),
            "original": (f"/media/{original}", originals[original], ()),
        }
    finally:
        srv.stop()
    res = {k: {"bytes": len(b), "path": p, "rounds": []} for k, (p, b, _) in targets.items()}
    # rentcache twice: as configured by default (`body_dir: auto`: unnamed files in /var/tmp
    # when it is on a disk filesystem, as here), and with bodies in sealed memory files.
    for rnd in range(rounds):
        for server in SERVERS:
            if server == "rentcache":
                srv = start_rentcache(work, origin)
            elif server == "rentcache_memfd":
                srv = start_rentcache(work, origin, "memory")
            else:
                srv = start_nginx(work, {os.path.basename(p): b for p, b, _ in targets.values()})
            try:
                for label, (path, body, head) in targets.items():
                    url = "/" + os.path.basename(path) if server == "nginx" else path
                    for _ in range(2):
                        status, h, got = compare.http_get(srv.port, url, headers=head)
                        assert status == 200 and got == body, (server, label, status, len(got), len(body))
                        assert "content-encoding" not in h, (server, label, h)
                    r = wrk_own_cpu(srv, url, duration, headers=head)
                    r.update(memory_kib(srv.pid))
                    paced = wrk_own_cpu(srv, url, duration, PACE_MS, headers=head)
                    r["paced_rps"] = paced["rps"]
                    r["paced_us"] = paced["server_us"]
                    res[label]["rounds"].append({"server": server, "round": rnd, **r})
                    print(f"  round {rnd + 1} {server:9} {label:21} ({len(body) / 1000:.0f} KB): "
                          f"{r['rps']:8.0f} req/s, {r['server_us']:.1f} us CPU/request (own; "
                          f"{r['core_us']:.1f} by its core) (server core {r['server_cpu']:.0f}%, "
                          f"load core {r['load_cpu']:.0f}%); paced: {r['paced_rps']:.0f} req/s, "
                          f"{r['paced_us']:.1f} us CPU/request")
            finally:
                srv.stop()
    for label, r in res.items():
        for server in SERVERS:
            runs = [x for x in r["rounds"] if x["server"] == server]
            r[server] = {"rps": statistics.median(x["rps"] for x in runs),
                         "server_us": statistics.median(x["server_us"] for x in runs),
                         "paced_rps": statistics.median(x["paced_rps"] for x in runs),
                         "paced_us": statistics.median(x["paced_us"] for x in runs),
                         "p99": statistics.median(x["p99"] for x in runs)}
        # Ratios to nginx within each round, then the median.
        for server in SERVERS[:-1]:
            per_round = []
            for rnd in range(rounds):
                a = next(x for x in r["rounds"] if x["server"] == server and x["round"] == rnd)
                b = next(x for x in r["rounds"] if x["server"] == "nginx" and x["round"] == rnd)
                per_round.append((a["rps"] / b["rps"], a["server_us"] / b["server_us"],
                                  a["paced_us"] / b["paced_us"]))
            r[server]["rps_ratio"] = statistics.median(x[0] for x in per_round)
            r[server]["cpu_ratio"] = statistics.median(x[1] for x in per_round)
            r[server]["paced_ratio"] = statistics.median(x[2] for x in per_round)
    return res


def listing_bytes(work, origin, sim_port):
    """The photos of a 25-card listing page, as Rentman has them and as card variants."""
    srv = start_rentcache(work, origin)
    try:
        _, _, body = compare.http_get(sim_port, "/propertyadvertising.php?rob=rent&limit=25&page=1&noimage=1")
        names = [(r.get("photo1") or "").strip() for r in json.loads(body)]
        names = [n for n in names if n]
        total = {"cards": len(names), "original": 0, "card_jpeg": 0, "card_webp": 0}
        import http.client
        for n in names:
            q = urllib.parse.quote(n)
            total["original"] += len(compare.http_get(srv.port, f"/media/{q}")[2])
            total["card_jpeg"] += len(compare.http_get(srv.port, f"/media/card/{q}")[2])
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            c.request("GET", f"/media/card/{q}", headers={"Accept": "image/webp,*/*"})
            r = c.getresponse()
            assert r.getheader("content-type") == "image/webp"
            total["card_webp"] += len(r.read())
            c.close()
        # What the page's JSON carries when a site asks for photo1binary (base64, +33%).
        total["photo1binary"] = int(total["original"] * 4 / 3)
        print(f"  25-card page: originals {total['original'] / 1e6:.2f} MB, cards JPEG "
              f"{total['card_jpeg'] / 1e6:.3f} MB, WebP {total['card_webp'] / 1e6:.3f} MB")
        return total
    finally:
        srv.stop()


def hits_table(h):
    md = ["", "Memory hits (HTTP/1.1 keep-alive, wrk with 50 connections and its own one-line request head, "
           "or, for `browser head`, a Chrome-like head of 12 headers; one server core), rentcache "
           "as configured by default (`memory.body_dir: auto`: large bodies in unnamed files in /var/tmp, on "
           "the disk filesystem nginx's files are on) and with bodies in sealed memory files, against nginx serving the same bytes as static files (sendfile), interleaved, medians of "
           f"{len(h['variant']['rounds']) // len(SERVERS)} rounds; CPU is the server processes' own user + "
           "system time per request, at full load and at the same paced load for every server (each "
           f"connection pausing {PACE_MS} ms on average before each request); ratios are to nginx in the same "
           "round:", "",
           "| body | server | req/s | CPU us/req | req/s vs nginx | CPU vs nginx | paced: req/s, CPU us/req "
           "| paced CPU vs nginx |", "|---|---|---|---|---|---|---|---|"]
    for label, r in h.items():
        for server in SERVERS:
            x = r[server]
            ratios = (f"{x['rps_ratio']:.2f}x | {x['cpu_ratio']:.2f}x" if server != "nginx" else "1 | 1")
            paced = f"{x['paced_ratio']:.2f}x" if server != "nginx" else "1"
            md.append(f"| {label} ({r['bytes'] / 1000:.0f} KB) | {SERVER_LABELS[server]} | {x['rps']:.0f} | "
                      f"{x['server_us']:.1f} | {ratios} | {x['paced_rps']:.0f}, {x['paced_us']:.1f} | {paced} |")
    return md


def summarize(results):
    v = results["variants"]
    h = results["hits"]
    b = results["listing"]
    md = [f"Measured {results['date']} on {results['machine']}, with `{results['command']}`.", "",
          f"Variant generation, one core, in process, per file ({v['card']['files']} simulator photos x "
          f"{v['card']['samples'] // v['card']['files']} runs; JPEG and WebP at quality {QUALITY}):", "",
          "| variant (width) | rentcache p50 / p99 (ms) | libvips p50 / p99 (ms) | libvips / rentcache (p50) "
          "| WebP: rentcache / libvips p50 (ms) | `vipsthumbnail` CLI, ms per file |",
          "|---|---|---|---|---|---|"]
    for name, r in v.items():
        md.append(f"| {name} ({r['width']}) | {r['rentcache_p50'] / 1000:.2f} / {r['rentcache_p99'] / 1000:.2f} | "
                  f"{r['vips_p50'] / 1000:.2f} / {r['vips_p99'] / 1000:.2f} | "
                  f"{r['vips_p50'] / r['rentcache_p50']:.2f}x | "
                  f"{r['rentcache_webp_p50'] / 1000:.2f} / {r['vips_webp_p50'] / 1000:.2f} | "
                  f"{r['vipsthumbnail_cli_mean'] / 1000:.2f} |")
    md += hits_table(h)
    md += ["", f"A 25-card listing page ({b['cards']} photos): originals {b['original'] / 1e6:.2f} MB "
           f"({b['photo1binary'] / 1e6:.2f} MB as `photo1binary` base64), card variants "
           f"{b['card_jpeg'] / 1e3:.0f} KB as JPEG, {b['card_webp'] / 1e3:.0f} KB as WebP."]
    text = "\n".join(md) + "\n"
    with open(os.path.join(BENCH, "media.md"), "w") as f:
        f.write(text)
    with open(os.path.join(BENCH, "media.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    plot(results)


def plot(results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (apt-get install python3-matplotlib): no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    v = results["variants"]
    names = list(v)
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], [v[n]["rentcache_p50"] / 1000 for n in names], 0.4, color="#2a7",
                label="rentcache")
    axes[0].bar([i + 0.2 for i in x], [v[n]["vips_p50"] / 1000 for n in names], 0.4, color="#888", label="libvips")
    axes[0].set_xticks(list(x), [f"{n}\n{v[n]['width']} px" for n in names])
    axes[0].set_title("variant generation, JPEG, p50 (ms)")
    axes[0].legend()
    h = results["hits"]
    labels = list(h)
    for ax, metric, title in ((axes[1], "rps", "memory hits: requests/s"),
                              (axes[2], "server_us", "memory hits: server CPU us/request")):
        for k, (server, color) in enumerate(zip(SERVERS, ("#7c9", "#2a7", "#36c"))):
            ax.bar([i + (k - 1) * 0.27 for i in range(len(labels))], [h[l][server][metric] for l in labels], 0.27,
                   color=color, label=SERVER_LABELS[server].replace("`", ""))
        ax.set_xticks(range(len(labels)), [f"{l}\n{h[l]['bytes'] / 1000:.0f} KB" for l in labels])
        ax.set_title(title)
        # Room above the bars for the legend.
        ax.set_ylim(top=ax.get_ylim()[1] * 1.3)
    axes[1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(BENCH, "media.png"), dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each file per round")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--hits-only", action="store_true",
                    help="only the memory hits against nginx (prints their table; writes nothing)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.photos, args.repeat = 1, 3, 12, 2
    ensure_tools()
    work = tempfile.mkdtemp(prefix="rentcache-media-")
    vips_time = build(work) if not args.no_build else None
    if vips_time is None:
        vips_time = os.path.join(work, "vips_time")
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "vips"], check=True, capture_output=True,
                               text=True).stdout.split()
        compare.sh(["gcc", "-O2", os.path.join(BENCH, "vips_time.c")] + flags + ["-o", vips_time])
    sim_port = compare.free_port()
    sim = compare.Proc([BIN, "simulate", "--port", str(sim_port), "--latency-ms", "0", "--threads", "1"],
                       compare.LOAD_CPU, sim_port, log=os.path.join(work, "sim.log"))
    origin = f"127.0.0.1:{sim_port}"
    results = {"machine": compare.machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
               "command": " ".join(["python3", "bench/media.py"] + sys.argv[1:])}
    try:
        files = photos(sim_port, work, args.photos)
        print(f"{len(files)} photos, {min(map(os.path.getsize, files)) / 1000:.0f}-"
              f"{max(map(os.path.getsize, files)) / 1000:.0f} KB")
        if args.hits_only:
            results["hits"] = hits(work, origin, [os.path.basename(f) for f in files], args.rounds, args.duration)
            print("\n".join(hits_table(results["hits"])))
            return
        results["variants"] = variant_times(files, vips_time, args.repeat, args.rounds)
        results["hits"] = hits(work, origin, [os.path.basename(f) for f in files], args.rounds, args.duration)
        results["listing"] = listing_bytes(work, origin, sim_port)
    finally:
        sim.stop()
    summarize(results)


if __name__ == "__main__":
    main()
