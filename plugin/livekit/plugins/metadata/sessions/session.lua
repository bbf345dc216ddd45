-- Functions shared by the session scripts (merge.lua, remove.lua) and by the
-- endpoint's admit_write.lua. A session is one hash; the reserved field '\255'
-- holds S = sum(entry_size(key, value) + 1) over its entries (size = 1 + S, or
-- 2 for {}). Lists go to redis.call in chunks of 1000 (Lua's unpack() has a
-- stack limit).

-- entry_size(f, b'') = len(orjson.dumps(f)) + 1: f's JSON length escaping exactly
-- as orjson does (\" \\ \b \t \n \f \r, other control characters as \u00XX).
local function key_size(f)
  if string.find(f, '[%z\1-\31"\\]') then
    local _, q = string.gsub(f, '["\\]', '')
    local _, e = string.gsub(f, '[\8\9\10\12\13]', '')
    local _, c = string.gsub(f, '[%z\1-\31]', '')
    return #f + 3 + q + e + 5 * (c - e)
  end
  return #f + 3
end

-- The values of names (names[1] is '\255') and S; a hash without the reserved
-- field (written by something else) is measured from its contents.
local function read_session(key, names)
  local old
  if #names <= 1000 then
    old = redis.call('HMGET', key, unpack(names))
  else
    old = {}
    for j = 1, #names, 1000 do
      local part = redis.call('HMGET', key, unpack(names, j, math.min(j + 999, #names)))
      for k = 1, #part do old[#old + 1] = part[k] end
    end
  end
  local s = tonumber(old[1])
  if not s then
    s = 0
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do s = s + key_size(all[i]) + 1 + #all[i + 1] end
  end
  return old, s
end

-- A merge, planned but not written: the fields to set travel packed (data is
-- key1 value1 key2 value2 ... concatenated, lengths their byte lengths, comma-
-- separated); removes are names disjoint from them. Returns {kv, hdel, s, size}.
local function plan_merge(key, lengths, data, removes)
  local kv = {}
  local pos = 1
  for l in string.gmatch(lengths, '%d+') do
    local e = pos + tonumber(l)
    kv[#kv + 1] = string.sub(data, pos, e - 1)
    pos = e
  end
  local names = {'\255'}
  for i = 1, #kv, 2 do names[#names + 1] = kv[i] end
  for i = 1, #removes do names[#names + 1] = removes[i] end
  local old, s = read_session(key, names)
  local n = 1
  for i = 1, #kv, 2 do
    n = n + 1
    if old[n] then
      s = s - #old[n] + #kv[i + 1]
    else
      s = s + key_size(kv[i]) + #kv[i + 1] + 1
    end
  end
  local hdel = {}
  for i = 1, #removes do
    n = n + 1
    if old[n] then
      s = s - key_size(removes[i]) - #old[n] - 1
      hdel[#hdel + 1] = removes[i]
    end
  end
  local size = 2
  if s > 0 then size = 1 + s end
  return {kv = kv, hdel = hdel, s = s, size = size}
end

-- Write a planned merge and slide the TTL.
local function apply_merge(key, plan, ttl_ms)
  local kv, hdel = plan.kv, plan.hdel
  for j = 1, #hdel, 1000 do
    redis.call('HDEL', key, unpack(hdel, j, math.min(j + 999, #hdel)))
  end
  if #kv <= 998 then
    redis.call('HSET', key, '\255', plan.s, unpack(kv))
  else
    redis.call('HSET', key, '\255', plan.s)
    for j = 1, #kv, 1000 do
      redis.call('HSET', key, unpack(kv, j, math.min(j + 999, #kv)))
    end
  end
  redis.call('PEXPIRE', key, ttl_ms)
end

-- The session as one JSON object text (values are compact JSON already; the
-- reserved field left out): one bulk reply the client decodes with one loads.
local function session_json(key)
  local all = redis.call('HGETALL', key)
  local parts = {}
  for i = 1, #all, 2 do
    local f = all[i]
    if f ~= '\255' then
      if string.find(f, '[%z\1-\31"\\]') then f = cjson.encode(f) else f = '"' .. f .. '"' end
      parts[#parts + 1] = f .. ':' .. all[i + 1]
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end
