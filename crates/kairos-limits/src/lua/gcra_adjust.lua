-- Moves one limiter's TAT by a signed number of microseconds (TPM post-correction), never below
-- now (a give-back cannot credit more than a full bucket) and never more than 2^51 µs ahead.
--
-- KEYS[1]  the limiter; ARGV[1]  the signed move in µs.
-- Returns {now_us, new_tat_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local delta = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local nt = tat + delta
if nt < now then nt = now end
if nt > now + 2251799813685248 then nt = now + 2251799813685248 end
if nt > now then
  local ttl_ms = math.ceil((nt - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', nt), 'PX', string.format('%.0f', ttl_ms))
else
  redis.call('DEL', KEYS[1])
end
return {now, nt}
