-- Settle or release one request that was admitted against a lease (a block of budget this
-- replica reserved in Redis under the lease id), once.
--
-- KEYS[1]  the request's finalized marker
-- ARGV     1 prefix, 2 request id, 3 lease id, 4 mode (settle|release), 5 actual cost
--          (micros), 6 the request's part of the lease (micros), 7 marker ttl (s),
--          8 number of scopes n, then per scope: id, period, period id (the lease's period)
-- Returns {0, lost} when applied (lost = 1 when the lease's hold was gone in some scope:
-- expired, or Redis flushed / restarted; the replica must stop using that lease);
-- {3, 1 settled | 2 released} when the request was already finalized (nothing changes).
local prefix, rid, lease, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local actual = tonumber(ARGV[5])
local part = tonumber(ARGV[6])
local marker_ttl = tonumber(ARGV[7])
local n = tonumber(ARGV[8])

local done = redis.call('GET', KEYS[1])
if done then
  if done == 'released' then return {3, 2} end
  return {3, 1}
end

local lost = 0
for i = 1, n do
  local b = 9 + (i - 1) * 3
  local h, rx, ra = scope_keys(prefix, ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b])
  local held = redis.call('HGET', ra, lease)
  if not held then
    lost = 1
  elseif mode == 'settle' then
    -- The request's part leaves the lease's hold; what the lease still holds stays held
    -- until the lease is released (or expires).
    held = tonumber(held)
    local dec = part
    if dec > held then dec = held end
    if dec > 0 then
      redis.call('HSET', ra, lease, fmt(held - dec))
      redis.call('HINCRBY', h, 'reserved', fmt(-dec))
    end
  end
  -- A counter that is gone (flushed, expired) is re-seeded from the ledger, which has this
  -- cost: do not resurrect it with a partial sum.
  if mode == 'settle' and redis.call('HEXISTS', h, 'spent') == 1 then
    redis.call('HINCRBY', h, 'spent', fmt(actual))
  end
end
local marker = 'released'
if mode == 'settle' then marker = 'settled' end
redis.call('SET', KEYS[1], marker, 'EX', fmt(marker_ttl))
return {0, lost}
