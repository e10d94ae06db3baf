-- GCRA decision over several limiters, all or nothing (see rate.rs for the maths).
--
-- KEYS[i]       limiter i; its value is its TAT in unix microseconds, nothing else.
-- ARGV[2i-1]    what admitting the request adds to the TAT of limiter i (µs, rounded up)
-- ARGV[2i]      the tolerance of limiter i (µs, rounded down)
--
-- Time is Redis TIME, never a replica's clock. A key repeated in KEYS is charged in sequence.
-- Returns {allowed (1|0), now_us, tat_1, ..., tat_n}: when allowed, the TATs after charging;
-- when denied, the TATs before (max(TAT, now)), and nothing was written.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = {}
local out = {1, now}
local after = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local inc = tonumber(ARGV[2 * i - 1])
  local dvt = tonumber(ARGV[2 * i])
  local tat = cur[k]
  if tat == nil then
    tat = tonumber(redis.call('GET', k) or '0') or 0
  end
  if tat < now then tat = now end
  local nt = tat + inc
  if nt - now > dvt then out[1] = 0 end
  cur[k] = nt
  out[i + 2] = tat
  after[i] = nt
end
if out[1] == 1 then
  for k, nt in pairs(cur) do
    if nt > now then
      local ttl_ms = math.ceil((nt - now) / 1000) + 1000
      redis.call('SET', k, string.format('%.0f', nt), 'PX', string.format('%.0f', ttl_ms))
    end
  end
  for i = 1, #KEYS do out[i + 2] = after[i] end
end
return out
