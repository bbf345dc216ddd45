-- KEYS[1] the sessions set. ARGV: now_us, session_id, ttl_us, max_sessions.
-- Returns {1, bad} if reserved, {0, bad} when full (nothing else changed).
local ttl = tonumber(ARGV[3])
live(KEYS[1], ttl)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return {0, bad} end
end
add(KEYS[1], ARGV[2], ttl)
return {1, bad}
