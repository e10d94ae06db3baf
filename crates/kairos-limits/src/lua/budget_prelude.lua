-- Shared by every budget script. The period maths is the twin of period.rs (floor division,
-- Howard Hinnant's civil calendar); tests check the two agree.
local function fdiv(a, b) return math.floor(a / b) end
-- Numbers as exact decimal strings: Redis would format a Lua number with %.14g.
local function fmt(n)
  if n == 0 then return '0' end -- never '-0', which Redis does not parse as an integer
  return string.format('%.0f', n)
end

local function civil_from_days(z)
  z = z + 719468
  local era = fdiv(z, 146097)
  local doe = z - era * 146097
  local yoe = fdiv(doe - fdiv(doe, 1460) + fdiv(doe, 36524) - fdiv(doe, 146096), 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + fdiv(yoe, 4) - fdiv(yoe, 100))
  local mp = fdiv(5 * doy + 2, 153)
  local d = doy - fdiv(153 * mp + 2, 5) + 1
  local m
  if mp < 10 then m = mp + 3 else m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = fdiv(y, 400)
  local yoe = y - era * 400
  local mp
  if m > 2 then mp = m - 3 else mp = m + 9 end
  local doy = fdiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + fdiv(yoe, 4) - fdiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

-- id, start (unix s), end (unix s; -1 for lifetime) of the period containing now_s.
local function period_bounds(kind, now_s)
  if kind == 'day' then
    local id = fdiv(now_s, 86400)
    return id, id * 86400, (id + 1) * 86400
  elseif kind == 'month' then
    local y, m = civil_from_days(fdiv(now_s, 86400))
    local ny, nm = y, m + 1
    if nm > 12 then nm = 1; ny = y + 1 end
    return y * 12 + m - 1, days_from_civil(y, m, 1) * 86400, days_from_civil(ny, nm, 1) * 86400
  elseif kind == 'lifetime' then
    return 0, 0, -1
  end
  error('unknown budget period ' .. tostring(kind))
end

-- Redis TIME as (seconds, milliseconds). `override` is '' in production; only the crate's own
-- tests pass a unix time there to exercise period rollover.
local function clock(override)
  if override ~= nil and override ~= '' then
    local s = tonumber(override)
    return s, s * 1000
  end
  local t = redis.call('TIME')
  local s = tonumber(t[1])
  return s, s * 1000 + fdiv(tonumber(t[2]), 1000)
end

-- The three keys of a scope in one period: counter hash {spent, reserved}, the reservations'
-- expiry index (zset request_id -> expiry ms) and their amounts (hash request_id -> micros).
-- The scope id comes last so that no scope id can collide with another key's layout.
local function scope_keys(prefix, kind, pid, sid)
  local base = prefix .. 'bg:' .. kind .. ':' .. fmt(pid) .. ':'
  return base .. 'h:' .. sid, base .. 'rx:' .. sid, base .. 'ra:' .. sid
end

-- Drops up to 100 expired reservations of one scope: O(k log n).
local function reclaim(h, rx, ra, now_ms)
  local expired = redis.call('ZRANGEBYSCORE', rx, '-inf', fmt(now_ms), 'LIMIT', 0, 100)
  for _, rid in ipairs(expired) do
    local amount = redis.call('HGET', ra, rid)
    if amount then
      redis.call('HINCRBY', h, 'reserved', fmt(-tonumber(amount)))
      redis.call('HDEL', ra, rid)
    end
    redis.call('ZREM', rx, rid)
  end
end

-- Counters of a finished period live on for `grace` seconds after its end (lifetime: forever).
-- The floor at the real Redis time only matters under the tests' time override (a period in
-- the past); in production the current period always ends in the future.
local function keep_until(pend, grace, h, rx, ra)
  if pend >= 0 then
    local real_now = tonumber(redis.call('TIME')[1])
    if pend < real_now then pend = real_now end
    local at = fmt(pend + grace)
    redis.call('EXPIREAT', h, at)
    redis.call('EXPIREAT', rx, at)
    redis.call('EXPIREAT', ra, at)
  end
end
