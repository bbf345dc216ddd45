-- Shared by the limits scripts. ARGV[1] is now in microseconds ('' = the server's
-- own TIME, so replicas with skewed clocks agree). bad counts corrupt values met
-- (and repaired): they never admit a request.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local bad = 0
local function fmt(x) return string.format('%.0f', x) end
local function px(us) return fmt(math.min(math.ceil(us / 1000) + 1, 1e13)) end
local function capped(w) return math.ceil(math.min(w, 4e15)) end

-- A bucket's theoretical arrival time (TAT, microseconds): missing means a full
-- bucket; anything but a finite number in [0, now + burst * interval] is corrupt
-- and reads as (and is rewritten as) an empty bucket: fail closed.
local function read_tat(key, interval, burst)
  local raw = redis.call('GET', key)
  if not raw then return now end
  local top = now + burst * interval
  local tat = tonumber(raw)
  if tat == nil or tat ~= tat or tat < 0 or tat > top then
    bad = bad + 1
    redis.call('SET', key, fmt(top), 'PX', px(top - now))
    return top
  end
  if tat < now then tat = now end
  return tat
end

-- A sorted set of live sessions (score = expiry in microseconds): expired members
-- are dropped; an expiry beyond now + ttl is corrupt and pulled back to it.
local function expire(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, px(tonumber(last[2]) - now))
  end
end
local function live(key, ttl)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  local top = fmt(now + ttl)
  local far = redis.call('ZRANGEBYSCORE', key, '(' .. top, '+inf')
  for _, member in ipairs(far) do
    bad = bad + 1
    redis.call('ZADD', key, top, member)
  end
  if #far > 0 then expire(key) end
end
-- Called after live(key, ttl), so no member expires later than this one.
local function add(key, member, ttl)
  redis.call('ZADD', key, fmt(now + ttl), member)
  redis.call('PEXPIRE', key, px(ttl))
end

-- admit.lua's and admit_write.lua's question, asked without taking anything.
-- KEYS[1] the sessions set, KEYS[2] the owner's set, KEYS[3..n+2] the buckets.
-- ARGV: now_us, n, then interval_us and burst per bucket, then session_id ('' for
-- no reservation), ttl_us, max_sessions, owner_max (0: no share). Returns the
-- outcome (0 fits, 1 rate limited, 2 full, 3 the owner's share used up), the
-- wait in microseconds and the buckets' new TATs.
local function admission()
  local n = tonumber(ARGV[2])
  local wait = 0
  local tats = {}
  for i = 1, n do
    local interval = tonumber(ARGV[1 + 2 * i])
    local burst = tonumber(ARGV[2 + 2 * i])
    tats[i] = read_tat(KEYS[i + 2], interval, burst) + interval
    local w = tats[i] - now - burst * interval
    if w > wait then wait = w end
  end
  if wait > 0 then return 1, capped(wait), tats end
  local sid = ARGV[3 + 2 * n]
  if sid ~= '' then
    local owner_max = tonumber(ARGV[6 + 2 * n])
    live(KEYS[1], tonumber(ARGV[4 + 2 * n]))
    if owner_max > 0 then live(KEYS[2], tonumber(ARGV[4 + 2 * n])) end
    if not redis.call('ZSCORE', KEYS[1], sid) then
      if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5 + 2 * n]) then return 2, 0, tats end
      if owner_max > 0 and redis.call('ZCARD', KEYS[2]) >= owner_max then return 3, 0, tats end
    end
  end
  return 0, 0, tats
end

-- Take one credit from every bucket (the TATs admission() computed).
local function take(tats)
  for i = 1, #tats do
    redis.call('SET', KEYS[i + 2], fmt(tats[i]), 'PX', px(tats[i] - now))
  end
end

-- Make the reservation admission() found room for (none without a session id).
local function reserve()
  local n = tonumber(ARGV[2])
  local sid = ARGV[3 + 2 * n]
  if sid == '' then return end
  add(KEYS[1], sid, tonumber(ARGV[4 + 2 * n]))
  if tonumber(ARGV[6 + 2 * n]) > 0 then add(KEYS[2], sid, tonumber(ARGV[4 + 2 * n])) end
end
