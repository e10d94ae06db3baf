-- Spend of one scope in the current period (dropping expired reservations first).
--
-- ARGV  1 prefix, 2 scope id, 3 period, 4 time override ('' in production)
-- Returns {0, spent, reserved, period id, period start} or {1, 1, period id, start, end} when
-- the counter must be seeded first.
local prefix, sid, kind = ARGV[1], ARGV[2], ARGV[3]
local now_s, now_ms = clock(ARGV[4])
local pid, pstart, pend = period_bounds(kind, now_s)
local h, rx, ra = scope_keys(prefix, kind, pid, sid)
if redis.call('HEXISTS', h, 'spent') == 0 then
  return {1, 1, pid, pstart, pend}
end
reclaim(h, rx, ra, now_ms)
local spent = tonumber(redis.call('HGET', h, 'spent'))
local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0')
return {0, spent, reserved, pid, pstart}
