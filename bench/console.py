#!/usr/bin/env python3
"""What the operator's console costs a hit: the response-duration histogram, the latency
windows and (when on) the access log, measured beside nginx in the same round.

    python3 bench/console.py --before OLD_BIN --after NEW_BIN          # 3 rounds, ~5 minutes
    python3 bench/console.py --before OLD --after NEW --rounds 1 --seconds 3

OLD_BIN is a release build without the console (e.g. of the commit before it), NEW_BIN one
with it (default: target/release/rentcache). Each round runs, one after another, nginx
(proxy_cache), OLD, NEW, and NEW with the access log on (JSON lines to a file, every
request), each pinned to core 0 with one worker; wrk (1 thread, 50 keep-alive connections)
and the origin (the simulator) on core 1. Every request is a ~2 KB memory hit. Ratios are
taken within a round against nginx, then the medians of the rounds are reported.

Writes bench/console.json and bench/console.md (the README table).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
from compare import BENCH, BIN, Proc, free_port  # noqa: E402

PATH = compare.SMALL


def start_rentcache(binary, work, origin, access_log=None):
    port, admin = free_port(), free_port()
    conf = compare.rentcache_config(work, port, admin, origin)
    if access_log:
        with open(conf, "a") as f:
            f.write(f'access_log: {{to: "{access_log}", format: json}}\n')
    # TTL: the bench config's 5 s lifetime with SWR; a one-hour TTL keeps every request a hit.
    text = open(conf).read().replace(f"ttl: {compare.TTL}s", "ttl: 1h")
    open(conf, "w").write(text)
    return Proc([binary, "serve", "-c", conf], compare.SERVER_CPU, port,
                env={"RUST_LOG": "warn"}, log=os.path.join(work, f"rentcache-{port}.log"))


def thread_ticks(pid):
    """CPU time (utime + stime, clock ticks) of each thread of `pid`, by thread name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[tid] = (name, int(fields[11]) + int(fields[12]))
    return out


def own_cpu_us(pid, before, after, requests):
    """The server process's own CPU per request, µs: its request threads, and the access-log
    writer apart. Unlike a core's busy time, other processes on the core do not count."""
    hz = os.sysconf("SC_CLK_TCK")
    serve, log = 0, 0
    for tid, (name, ticks) in after.items():
        d = ticks - before.get(tid, (name, 0))[1]
        if name == "access-log":
            log += d
        else:
            serve += d
    per = lambda t: t / hz * 1e6 / max(1, requests)  # noqa: E731
    return per(serve), per(log)


def warm(port):
    for _ in range(3):
        status, headers, _ = compare.http_get(port, PATH)
    if status != 200 or headers.get("x-cache-status", "HIT") != "HIT":
        raise RuntimeError(f"{port}{PATH} is not a hit after warming: {status} {headers}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="release binary without the console")
    ap.add_argument("--after", default=BIN, help="release binary with the console")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    compare.ensure_tools()
    work = tempfile.mkdtemp(prefix="rc-console-")
    sim_port = free_port()
    sim = Proc([args.after, "simulate", "--port", str(sim_port), "--latency-ms", "0", "--threads", "1"],
               compare.LOAD_CPU, sim_port, log=os.path.join(work, "sim.log"))
    origin = f"127.0.0.1:{sim_port}"
    log_file = os.path.join(work, "access.log")
    makers = {
        "nginx": lambda: compare.start_server("nginx", work, origin),
        "before": lambda: start_rentcache(args.before, work, origin),
        "after": lambda: start_rentcache(args.after, work, origin),
        "after_log": lambda: start_rentcache(args.after, work, origin, access_log=log_file),
    }
    rows = []
    try:
        for rnd in range(args.rounds):
            row = {"round": rnd}
            # Alternate the order of the rentcache runs from round to round, so that a drift
            # in the machine's load does not always favour the same one.
            order = list(makers) if rnd % 2 == 0 else ["nginx", "after_log", "after", "before"]
            for name in order:
                p = makers[name]()
                try:
                    warm(p.port)
                    before = thread_ticks(p.pid) if name != "nginx" else None
                    r = compare.wrk(p.port, PATH, args.seconds)
                    if before is not None:
                        serve, log = own_cpu_us(p.pid, before, thread_ticks(p.pid), r["requests"])
                        row[f"{name}_cpu_req"] = serve
                        row[f"{name}_cpu_log"] = log
                finally:
                    p.stop()
                row[f"{name}_rps"] = r["rps"]
                row[f"{name}_us"] = r["server_us"]
                row[f"{name}_p99"] = r["p99"]
            row["log_lines"] = sum(1 for _ in open(log_file)) if os.path.exists(log_file) else 0
            os.path.exists(log_file) and os.remove(log_file)
            rows.append(row)
            print(row, flush=True)
    finally:
        sim.stop()
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    ratio = lambda a: statistics.median(r[f"{a}_rps"] / r["nginx_rps"] for r in rows)  # noqa: E731
    summary = {name: {"rps": med(f"{name}_rps"), "us": med(f"{name}_us"), "p99_ms": med(f"{name}_p99"),
                      "ratio_to_nginx": ratio(name),
                      "own_us": med(f"{name}_cpu_req") if name != "nginx" else None,
                      "log_us": med(f"{name}_cpu_log") if name != "nginx" else None} for name in makers}
    summary["after"]["vs_before"] = statistics.median(r["after_rps"] / r["before_rps"] for r in rows)
    summary["after_log"]["vs_before"] = statistics.median(r["after_log_rps"] / r["before_rps"] for r in rows)
    json.dump({"rows": rows, "summary": summary, "machine": compare.machine()},
              open(os.path.join(BENCH, "console.json"), "w"), indent=1)
    names = {"nginx": "nginx", "before": "rentcache without the console",
             "after": "rentcache with the console (histogram, windows)",
             "after_log": "the same, access log on (JSON, every request, to a file)"}
    lines = ["| server | req/s | / nginx | / without the console | server core µs per request "
             "| process CPU µs per request: request threads (+ log writer) | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        own = "" if s["own_us"] is None else f"{s['own_us']:.2f}" + (
            f" (+ {s['log_us']:.2f})" if s["log_us"] else "")
        vs = f"{s['vs_before']:.2f}x" if "vs_before" in s else ""
        lines.append(f"| {names[name]} | {s['rps']:,.0f} | {s['ratio_to_nginx']:.2f}x | {vs} | {s['us']:.2f} "
                     f"| {own} | {s['p99_ms']:.2f} |")
    open(os.path.join(BENCH, "console.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
