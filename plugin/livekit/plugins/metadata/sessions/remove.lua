-- KEYS[1] the session hash. ARGV: ttl_ms, then the fields to remove (distinct).
-- Returns how many keys existed. The TTL is refreshed when keys remain; a session
-- left without keys is deleted.
local key = KEYS[1]
local removes = {}
for i = 2, #ARGV do removes[#removes + 1] = ARGV[i] end
local plan = plan_merge(key, '', '', removes)
local hdel = plan.hdel
if #hdel == 0 then return 0 end
if plan.s <= 0 then
  redis.call('DEL', key)
  return #hdel
end
for j = 1, #hdel, 1000 do
  redis.call('HDEL', key, unpack(hdel, j, math.min(j + 999, #hdel)))
end
redis.call('HSET', key, '\255', plan.s)
redis.call('PEXPIRE', key, ARGV[1])
return #hdel
