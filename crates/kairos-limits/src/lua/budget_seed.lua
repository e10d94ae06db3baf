-- Seeds a scope's counter for one period with the spend read from the durable ledger, only if
-- it does not exist yet (HSETNX: concurrent seeders agree on the first value).
--
-- ARGV  1 prefix, 2 scope id, 3 period, 4 period id, 5 period end (-1: none), 6 grace (s),
--       7 spent (micros)
-- Returns {1} when this call seeded, {0} when the counter already existed.
local prefix, sid, kind = ARGV[1], ARGV[2], ARGV[3]
local pid, pend = tonumber(ARGV[4]), tonumber(ARGV[5])
local grace = tonumber(ARGV[6])
local h, rx, ra = scope_keys(prefix, kind, pid, sid)
if redis.call('HSETNX', h, 'spent', ARGV[7]) == 0 then return {0} end
-- Reservations that outlived their counter (eviction) are forgotten with it: their settlements
-- charge the new counter, and the ledger-based seed does not include them twice.
redis.call('HSET', h, 'reserved', '0')
redis.call('DEL', rx, ra)
keep_until(pend, grace, h, rx, ra)
return {1}
