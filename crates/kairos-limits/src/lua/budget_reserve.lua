-- Reserve `amount` micro-USD for one request in every scope at once, or in none.
--
-- KEYS[1]  the request's finalized marker (set by settle/release)
-- ARGV     1 prefix, 2 request id, 3 amount, 4 reservation ttl (ms), 5 grace (s),
--          6 time override ('' in production), 7 number of scopes n,
--          then per scope: id, period (day|month|lifetime), limit
-- Returns (all integers)
--   {0, now_ms, then per scope: period id, period start, remaining after}   reserved
--   {1, then per missing counter: scope index, period id, start, end}       needs seed
--   {2, scope index, remaining}                                             denied
--   {3, 1 settled | 2 released}                                             already finalized
local prefix, rid = ARGV[1], ARGV[2]
local amount = tonumber(ARGV[3])
local ttl_ms = tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local now_s, now_ms = clock(ARGV[6])
local n = tonumber(ARGV[7])

local done = redis.call('GET', KEYS[1])
if done then
  if done == 'released' then return {3, 2} end
  return {3, 1}
end

local scopes = {}
local seeds = {1}
for i = 1, n do
  local b = 8 + (i - 1) * 3
  local kind = ARGV[b + 1]
  local pid, pstart, pend = period_bounds(kind, now_s)
  local h, rx, ra = scope_keys(prefix, kind, pid, ARGV[b])
  scopes[i] = {h = h, rx = rx, ra = ra, limit = tonumber(ARGV[b + 2]),
               pid = pid, pstart = pstart, pend = pend}
  if redis.call('HEXISTS', h, 'spent') == 0 then
    -- Redis is a cache: a missing counter is unknown spend, never zero.
    table.insert(seeds, i)
    table.insert(seeds, pid)
    table.insert(seeds, pstart)
    table.insert(seeds, pend)
  end
end
if #seeds > 1 then return seeds end

for i = 1, n do
  local s = scopes[i]
  reclaim(s.h, s.rx, s.ra, now_ms)
  local spent = tonumber(redis.call('HGET', s.h, 'spent'))
  local reserved = tonumber(redis.call('HGET', s.h, 'reserved') or '0')
  -- Reserving again under the same request id replaces the earlier amount.
  s.old = tonumber(redis.call('HGET', s.ra, rid) or '0')
  local committed = spent + reserved - s.old
  if committed + amount > s.limit then
    return {2, i, s.limit - committed}
  end
  s.remaining = s.limit - committed - amount
end

local expiry = fmt(now_ms + ttl_ms)
local out = {0, now_ms}
for i = 1, n do
  local s = scopes[i]
  redis.call('HINCRBY', s.h, 'reserved', fmt(amount - s.old))
  redis.call('HSET', s.ra, rid, fmt(amount))
  redis.call('ZADD', s.rx, expiry, rid)
  keep_until(s.pend, grace, s.h, s.rx, s.ra)
  table.insert(out, s.pid)
  table.insert(out, s.pstart)
  table.insert(out, s.remaining)
end
return out
