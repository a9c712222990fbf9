-- wrk script for bench/run.sh: whole-object GETs or random single ranges over
-- a set of objects named PREFIX1 .. PREFIXn, all of the same size.
--
-- Environment (set by run.sh):
--   BENCH_MODE     full | range
--   BENCH_OBJECTS  number of objects
--   BENCH_SIZE     object size in bytes
--   BENCH_PREFIX   path prefix, e.g. /obj-
--   BENCH_SEED     seed; each wrk thread uses seed*1000 + thread number, so
--                  both caches see the same request sequence per thread
--   BENCH_RMIN / BENCH_RMAX   range length bounds in bytes (range mode)
--
-- done() prints one machine-readable RESULT line (latencies in microseconds).

local mode = os.getenv("BENCH_MODE") or "full"
local nobj = tonumber(os.getenv("BENCH_OBJECTS") or "1")
local size = tonumber(os.getenv("BENCH_SIZE") or "0")
local prefix = os.getenv("BENCH_PREFIX") or "/obj-"
local seed = tonumber(os.getenv("BENCH_SEED") or "42")
local rmin = tonumber(os.getenv("BENCH_RMIN") or "65536")
local rmax = tonumber(os.getenv("BENCH_RMAX") or "4194304")
if rmax > size then rmax = size end
if rmin > rmax then rmin = rmax end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  math.randomseed(seed * 1000 + (tid or 0))
end

function request()
  local path = prefix .. math.random(1, nobj)
  if mode == "range" then
    local len = math.random(rmin, rmax)
    local first = math.random(0, size - len)
    return wrk.format("GET", path, { ["Range"] = "bytes=" .. first .. "-" .. (first + len - 1) })
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d mean_us=%d max_us=%d\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.mean, latency.max))
end
