-- wrk script for scripts/bench: one file, the case is chosen by the environment.
--
--   BENCH_CASE    seed | post | get | filter | patch | hello
--   BENCH_TOKEN   bearer token (all cases but hello)
--   BENCH_BASE    SCIM base path on the server, e.g. /scim/v2 (geoscim) or /v2 (scim2-server)
--   BENCH_PREFIX  userName prefix, unique per run and phase (seed, post)
--   BENCH_IDS     file of "id<TAB>userName" lines to sample from (get, filter, patch)
--   BENCH_OUT     folder for the seed output: ids.<thread> files and done.<thread> markers (seed)
--   BENCH_TOTAL   number of users to create over all threads (seed)
--   BENCH_THREADS wrk's -t, to split BENCH_TOTAL between threads (seed)
--
-- wrk gives every thread its own Lua state: counters live in each thread's globals and done()
-- (in the main state) adds them up through thread:get(). done() prints one machine-readable
-- `BENCH_RESULT key=value ...` line that scripts/bench parses.
--
-- wrk has no request-count limit: a seeding thread stops itself (wrk.thread:stop()) once it has its
-- share of created users and drops a done.<thread> marker; scripts/bench then sends SIGINT to wrk,
-- which otherwise sleeps out its -d duration (the time bound). Requests still in flight when a
-- thread stops may be created server-side too (at most one per connection), without being recorded.

local case    = os.getenv("BENCH_CASE") or "get"
local token   = os.getenv("BENCH_TOKEN") or ""
local base    = os.getenv("BENCH_BASE") or "/scim/v2"
local prefix  = os.getenv("BENCH_PREFIX") or "bench"
local idsfile = os.getenv("BENCH_IDS")
local outdir  = os.getenv("BENCH_OUT")
local total   = tonumber(os.getenv("BENCH_TOTAL") or "0")
local nthr    = tonumber(os.getenv("BENCH_THREADS") or "1")

local PATCH_BODY = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],'
  .. '"Operations":[{"op":"replace","path":"active","value":false}]}'

-- ---------------------------------------------------------------------------------------------
-- main state: number the threads, collect them for done()
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

-- ---------------------------------------------------------------------------------------------
-- thread state
ok2xx, non2xx, created, wrong = 0, 0, 0, 0   -- globals: read by done() through thread:get()
bad_status = {}                               -- status -> count, for the non-2xx answers
local counter = 0
local ids, names = {}, {}
local out, quota, stopped = nil, 0, false
local get_headers, json_headers = {}, {}

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function load_ids(path)
  local f = assert(io.open(path, "r"), "cannot open BENCH_IDS " .. tostring(path))
  for line in f:lines() do
    local id, name = line:match("^([^\t]+)\t(.*)$")
    if id then
      ids[#ids + 1] = id
      names[#names + 1] = name
    end
  end
  f:close()
  assert(#ids > 0, "no ids in " .. path)
end

function init(args)
  tid = tid or 1
  math.randomseed(os.time() + tid * 7919)
  -- wrk.format() only adds "Host: <host>" (no port) to a headers table without one
  get_headers["Host"] = wrk.headers["Host"]
  json_headers["Host"] = wrk.headers["Host"]
  if case ~= "hello" then
    get_headers["Authorization"] = "Bearer " .. token
    get_headers["Accept"] = "application/scim+json"
    json_headers["Authorization"] = "Bearer " .. token
    json_headers["Accept"] = "application/scim+json"
    json_headers["Content-Type"] = "application/scim+json"
  end
  if case == "get" or case == "filter" or case == "patch" then
    load_ids(idsfile)
  elseif case == "seed" then
    -- this thread's share of the total: the first (total % nthr) threads take one more
    quota = math.floor(total / nthr)
    if tid <= total % nthr then quota = quota + 1 end
    out = assert(io.open(outdir .. "/ids." .. tid, "w"))
    out:setvbuf("line")
  end
end

local function user_body(name)
  return string.format(
    '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s",'
      .. '"name":{"givenName":"Bench","familyName":"User %d"},"displayName":"Bench %s",'
      .. '"emails":[{"value":"%s@example.com","type":"work","primary":true}],"active":true}',
    name, counter, name, name)
end

function request()
  if case == "seed" or case == "post" then
    counter = counter + 1
    local name = prefix .. "-t" .. tid .. "-" .. counter
    return wrk.format("POST", base .. "/Users", json_headers, user_body(name))
  elseif case == "get" then
    return wrk.format("GET", base .. "/Users/" .. ids[math.random(#ids)], get_headers)
  elseif case == "filter" then
    local f = 'userName eq "' .. names[math.random(#names)] .. '"'
    return wrk.format("GET", base .. "/Users?filter=" .. urlencode(f), get_headers)
  elseif case == "patch" then
    return wrk.format("PATCH", base .. "/Users/" .. ids[math.random(#ids)], json_headers, PATCH_BODY)
  else -- hello
    return wrk.format("GET", "/", get_headers)
  end
end

local function finish_seed()
  stopped = true
  out:close()
  local m = assert(io.open(outdir .. "/done." .. tid, "w"))
  m:write(created, "\n")
  m:close()
  wrk.thread:stop()
end

function response(status, headers, body)
  if stopped then return end
  if status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
  else
    non2xx = non2xx + 1
    bad_status[status] = (bad_status[status] or 0) + 1
  end
  if case == "filter" and status == 200 then
    -- a filter on an existing userName must find exactly that user: a fast empty answer is wrong
    if not (body and body:find('"totalResults"%s*:%s*1[^%d]')) then wrong = wrong + 1 end
  elseif case == "seed" then
    if status == 201 and body then
      local id = body:match('"id"%s*:%s*"([^"]+)"')
      local name = body:match('"userName"%s*:%s*"([^"]+)"')
      if id and name then
        out:write(id, "\t", name, "\n")
        created = created + 1
      end
    end
    -- stop at the quota, or give up when the server keeps refusing (the error count is reported)
    if created >= quota or non2xx > 100 + quota / 10 then finish_seed() end
  end
end

function done(summary, latency, requests)
  local ok, bad, made, wrongs, by_status = 0, 0, 0, 0, {}
  for _, t in ipairs(threads) do
    ok = ok + (t:get("ok2xx") or 0)
    bad = bad + (t:get("non2xx") or 0)
    made = made + (t:get("created") or 0)
    wrongs = wrongs + (t:get("wrong") or 0)
    for st, n in pairs(t:get("bad_status") or {}) do by_status[st] = (by_status[st] or 0) + n end
  end
  local codes = {}
  for st in pairs(by_status) do codes[#codes + 1] = st end
  table.sort(codes)
  local parts = {}
  for _, st in ipairs(codes) do parts[#parts + 1] = st .. ":" .. by_status[st] end
  local statuses = #parts > 0 and table.concat(parts, ",") or "-"
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d ok2xx=%d non2xx=%d created=%d wrong=%d "
      .. "connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d mean_us=%d max_us=%d statuses=%s\n",
    summary.requests, summary.duration, ok, bad, made, wrongs,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max, statuses))
end
