-- Settle (replace the reservation by the actual cost) or release (drop it) one request, once.
--
-- KEYS[1]  the request's finalized marker
-- ARGV     1 prefix, 2 request id, 3 mode (settle|release), 4 actual cost (micros),
--          5 marker ttl (s), 6 number of scopes n, then per scope: id, period, period id
--          (the period the reservation was made in)
-- Returns {0, scopes charged} when applied; {3, 1 settled | 2 released} when the request was
-- already finalized (a replay: nothing changes).
local prefix, rid, mode = ARGV[1], ARGV[2], ARGV[3]
local actual = tonumber(ARGV[4])
local marker_ttl = tonumber(ARGV[5])
local n = tonumber(ARGV[6])

local done = redis.call('GET', KEYS[1])
if done then
  if done == 'released' then return {3, 2} end
  return {3, 1}
end

local charged = 0
for i = 1, n do
  local b = 7 + (i - 1) * 3
  local h, rx, ra = scope_keys(prefix, ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b])
  local amount = redis.call('HGET', ra, rid)
  if amount then
    redis.call('HINCRBY', h, 'reserved', fmt(-tonumber(amount)))
    redis.call('HDEL', ra, rid)
    redis.call('ZREM', rx, rid)
  end
  -- A counter that is gone (flushed, expired) is re-seeded from the ledger, which has this
  -- cost: do not resurrect it with a partial sum.
  if mode == 'settle' and redis.call('HEXISTS', h, 'spent') == 1 then
    redis.call('HINCRBY', h, 'spent', fmt(actual))
    charged = charged + 1
  end
end
local marker = 'released'
if mode == 'settle' then marker = 'settled' end
redis.call('SET', KEYS[1], marker, 'EX', fmt(marker_ttl))
return {0, charged}
