-- Whether a lease still holds its money in every scope (the background validation of a live
-- lease: after a flush or a restart of Redis the hold is gone and the lease is not backed).
--
-- ARGV  1 prefix, 2 lease id, 3 number of scopes n, then per scope: id, period, period id
-- Returns {1} when the lease's hold exists in every scope, else {0}.
local prefix, lease = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
for i = 1, n do
  local b = 4 + (i - 1) * 3
  local h, rx, ra = scope_keys(prefix, ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b])
  if redis.call('HEXISTS', ra, lease) == 0 then return {0} end
end
return {1}
