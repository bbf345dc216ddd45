-- KEYS[1] the sessions set, KEYS[2] the owner's set, ARGV[1] the session id.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
