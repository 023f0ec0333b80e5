#!/usr/bin/env bash
# Instructions rentcache executes per memory hit (user space, the whole process), counted by
# valgrind's callgrind: repeatable on a busy or noisy machine, where times are not.
#
#     bench/hit_instructions.sh            # wrk's request head (one header)
#     bench/hit_instructions.sh --browser  # a Chrome-like head of 12 headers
#
# Starts the simulator and rentcache (under callgrind, memory tier only), caches the hero
# variant nearest 40 KB of property 1's photos, zeroes the counters, sends wrk's load (10
# connections, 15 s) and divides the instructions counted by the requests wrk made.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind callgrind_annotate wrk curl; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind wrk curl >/dev/null; break; }
done
cargo build --release --bin rentcache
BIN=target/release/rentcache
W=$(mktemp -d /tmp/rentcache-instructions-XXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SP=$(port); P=$(port); A=$(port)
cleanup() { kill "${VG:-}" "${SIM:-}" 2>/dev/null || true; }
trap cleanup EXIT
$BIN simulate --port "$SP" --latency-ms 0 --threads 1 >"$W/sim.log" 2>&1 &
SIM=$!
for _ in $(seq 120); do curl -s -o /dev/null "127.0.0.1:$SP/" && break; sleep 0.5; done
cat >"$W/rc.yaml" <<YAML
server: {listen: ["127.0.0.1:$P"], threads: 1, compression_level: 0}
admin: {listen: "127.0.0.1:$A"}
upstream: {base_url: "http://127.0.0.1:$SP", max_concurrent: 0}
memory: {max_bytes: 1GiB}
refresh_ahead: {hot_threshold: 0}
warm: {on_start: false}
routes:
  - name: media
    match: {path: /propertymedia.php}
    ttl: 1d
    include_params: [propref, filename]
    body: media
YAML
HEADERS=()
ACCEPT="*/*"
if [ "${1:-}" = "--browser" ]; then
  ACCEPT="image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
  HEADERS=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    -H "Accept: $ACCEPT" -H "Accept-Encoding: gzip, deflate, br, zstd" -H "Accept-Language: en-GB,en;q=0.9"
    -H "Referer: https://agent.example/lettings" -H "Sec-Fetch-Dest: image" -H "Sec-Fetch-Mode: no-cors"
    -H "Sec-Fetch-Site: cross-site" -H 'Sec-Ch-Ua: "Chromium";v="131"' -H "Sec-Ch-Ua-Mobile: ?0"
    -H 'Sec-Ch-Ua-Platform: "Linux"' -H "Cookie: _ga=GA1.1.123456789.1700000000")
fi
# The hero variant nearest 40 KB among the photos of properties 1-5, found with rentcache
# running as usual (making every variant under callgrind would take minutes).
RUST_LOG=warn $BIN serve -c "$W/rc.yaml" >"$W/plain.log" 2>&1 &
PLAIN=$!
for _ in $(seq 120); do curl -s -o /dev/null "127.0.0.1:$P/" && break; sleep 0.5; done
URL=$(python3 - "$SP" "$P" "$ACCEPT" <<'PY'
import json, sys, urllib.request
sim, proxy, accept = sys.argv[1:4]
best = None
for propref in range(1, 6):
    items = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sim}/propertymedia.php?propref={propref}"))
    for it in items:
        url = f"/media/hero/{it['filename']}"
        req = urllib.request.Request(f"http://127.0.0.1:{proxy}{url}", headers={"Accept": accept})
        try:
            n = len(urllib.request.urlopen(req, timeout=60).read())
        except Exception:
            continue
        if best is None or abs(n - 40_000) < abs(best[0] - 40_000):
            best = (n, url)
print(best[1])
PY
)
kill "$PLAIN"; wait "$PLAIN" 2>/dev/null || true
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" $BIN serve -c "$W/rc.yaml" >"$W/vg.log" 2>&1 &
VG=$!
for _ in $(seq 120); do curl -s -o /dev/null "127.0.0.1:$P/" && break; sleep 1; done
curl -s -o /dev/null -H "Accept: $ACCEPT" "127.0.0.1:$P$URL"
callgrind_control -z "$VG" >/dev/null
N=$(wrk -t1 -c10 -d15s "${HEADERS[@]}" "http://127.0.0.1:$P$URL" | awk '/requests in/{print $1}')
callgrind_control -d "$VG" >/dev/null
kill -INT "$VG"; wait "$VG" 2>/dev/null || true
F=$(ls -t "$W"/cg.out.* | head -1)
T=$(callgrind_annotate "$F" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "$URL: $N hits, $T instructions, $((T / N)) per hit"
