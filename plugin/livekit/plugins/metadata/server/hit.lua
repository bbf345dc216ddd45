-- KEYS[1] the bucket. ARGV: now_us, interval_us (1e6 / rate), burst. Returns
-- {0, bad} if allowed, else {wait_us, bad}.
local interval = tonumber(ARGV[2])
local tat = read_tat(KEYS[1], interval, tonumber(ARGV[3]))
local new_tat = tat + interval
local wait = new_tat - now - tonumber(ARGV[3]) * interval
if wait > 0 then return {capped(wait), bad} end
redis.call('SET', KEYS[1], fmt(new_tat), 'PX', px(new_tat - now))
return {0, bad}
