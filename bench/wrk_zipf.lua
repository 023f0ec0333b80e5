-- Requests drawn by Zipf rank (s = 1) from N distinct listing URLs, the same sequence for
-- every server (a fixed seed per thread), and one JSON line of results at the end
-- (latencies in microseconds). Arguments: N [path prefix].
local n, prefix = 2000, "/propertyadvertising.php?rob=rent&limit=25&noimage=1&page="
local cumulative = {}

local function setup_urls(count)
  local total = 0
  for rank = 1, count do
    total = total + 1 / rank
    cumulative[rank] = total
  end
  for rank = 1, count do
    cumulative[rank] = cumulative[rank] / total
  end
end

function init(args)
  if args[1] then n = tonumber(args[1]) end
  if args[2] then prefix = args[2] end
  setup_urls(n)
  math.randomseed(7)
end

local function pick()
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cumulative[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

request = function()
  return wrk.format("GET", prefix .. pick())
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"non2xx":%d,"p50":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
