-- KEYS[1] a sessions set. ARGV: now_us. Returns how many members are live.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
return redis.call('ZCARD', KEYS[1])
