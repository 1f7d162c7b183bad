-- wrk: send each pre-generated request of a pool file once (bench/pool.py writes it),
-- count every answer's status, and print a summary line "TRM-BENCH {json}" at the end.
-- Args: <pool file> <threads> <offered rate per second, 0: as fast as the server answers>
--       <marker prefix> [<file for each request's record number, scheduled and sent times>]
-- A thread whose requests are all answered writes <marker prefix>.<thread id> and stops (the
-- caller interrupts wrk once all have: wrk itself waits out its -d); the run's duration is
-- then from the first send to the last answer.
-- A thread takes every n-th record; once its records are all sent its connections wait,
-- and the thread stops when all are answered. With a rate, requests go out on a schedule
-- (open loop: a late answer does not delay the next send slot) and each one's scheduled
-- time is kept, so the latency counts from when it should have been sent.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } trm_timespec;
int clock_gettime(int clk, trm_timespec *tp);
]]
local ts = ffi.new("trm_timespec")
local function now() -- seconds since the epoch, as a float (CLOCK_REALTIME)
  ffi.C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local pool = {}
pooled, step, times_file = 0, 1, nil
sent, answered, reserved = 0, 0, 0
statuses = {}
idle_closed = 0
slots = {}
local rate, period = 0, 0
t0, last = nil, nil

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local nthreads = tonumber(args[2])
  local pos, n = 1, 0
  while pos <= #data do
    local nl = string.find(data, "\n", pos, true)
    local len = tonumber(string.sub(data, pos, nl - 1))
    if n % nthreads == id then
      pool[#pool + 1] = string.sub(data, nl + 1, nl + len)
    end
    n = n + 1
    pos = nl + 1 + len
  end
  pooled = #pool
  verified = id ~= 0
  rate = tonumber(args[3] or "0") or 0
  if rate > 0 then period = nthreads / rate end
  marker = args[4]
  times_file = args[5]
  step = nthreads
end

-- With a rate, each connection free to send reserves the next slot not yet reserved and
-- waits for its time, so one connection wakes per slot (were they all to wait for the
-- next slot, all but one would wake to nothing and send a filler, many per request).
function delay()
  if sent >= #pool or (rate > 0 and reserved >= #pool) then
    -- Keep the connection open until the others are answered, with a read every second
    -- (the server closes a connection idle for 5 s, which wrk would count as an error).
    return 1000
  end
  if rate == 0 then return 0 end
  if t0 == nil then t0 = now() end
  local due = t0 + reserved * period
  reserved = reserved + 1
  local wait = (due - now()) * 1000
  if wait < 0 then return 0 end
  return wait
end

local FILLER = "GET /healthz HTTP/1.1\r\nhost: bench\r\n\r\n"

function request()
  if not verified then
    -- wrk calls request() once in thread 0 before the run, to check what it returns.
    verified = true
    return FILLER
  end
  if t0 == nil then t0 = now() end
  if sent >= #pool then
    return FILLER -- a harmless read while the other connections' answers come in
  end
  if rate > 0 and (sent >= reserved or t0 + sent * period > now() + 0.005) then
    -- No slot of its own yet (a connection's first request, which wrk sends without
    -- asking delay()), or early (wrk's timers have millisecond steps, hence the 5 ms):
    -- a harmless read, after which delay() holds the connection until its slot.
    return FILLER
  end
  sent = sent + 1
  if times_file then
    local due = t0 + (sent - 1) * period
    slots[sent] = string.format("%d %.6f %.6f\n", id + (sent - 1) * step, due, now())
  end
  return pool[sent]
end

function response(status, headers, body)
  -- The filler read, or the server closing a connection left idle once the pool ran out
  -- (its header deadline): not answers to the pool's requests.
  if body == '{"status":"ok"}' then return end
  if status == 408 and string.find(body, "headers did not arrive", 1, true) then
    idle_closed = idle_closed + 1
    return
  end
  answered = answered + 1
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if answered >= pooled then
    last = now()
    local f = assert(io.open(marker .. "." .. id, "wb"))
    f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total = { pooled = 0, sent = 0, answered = 0 }
  local codes = {}
  for _, thread in ipairs(threads) do
    total.pooled = total.pooled + (thread:get("pooled") or 0)
    total.sent = total.sent + (thread:get("sent") or 0)
    total.answered = total.answered + (thread:get("answered") or 0)
    for k, v in pairs(thread:get("statuses") or {}) do codes[k] = (codes[k] or 0) + v end
  end
  local out = threads[1] and threads[1]:get("times_file")
  if out then
    local f = assert(io.open(out, "wb"))
    for _, thread in ipairs(threads) do f:write(table.concat(thread:get("slots") or {})) end
    f:close()
  end
  local first, finish, complete = nil, 0, true
  for _, thread in ipairs(threads) do
    local started, ended = thread:get("t0"), thread:get("last")
    if started and (first == nil or started < first) then first = started end
    if ended == nil then complete = false elseif ended > finish then finish = ended end
  end
  local duration = summary.duration
  if complete and first then duration = (finish - first) * 1e6 end
  local parts = {}
  for k, v in pairs(codes) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  local pcts = {}
  for _, p in ipairs({ 50, 95, 99 }) do
    pcts[#pcts + 1] = string.format('"p%d":%d', p, latency:percentile(p))
  end
  io.write(string.format(
    'TRM-BENCH {"duration_us":%d,"requests":%d,"pooled":%d,"sent":%d,"answered":%d,' ..
    '"statuses":{%s},"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{%s,"max":%d,"mean":%.1f}}\n',
    duration, summary.requests, total.pooled, total.sent, total.answered,
    table.concat(parts, ","), summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    table.concat(pcts, ","), latency.max, latency.mean))
end
