-- admit.lua and the token session's merge.lua in one step, all or nothing: a
-- request refused by its rates or the cap writes nothing; a session over its
-- size limit takes its rate credits (a refused request counts) and nothing else.
-- KEYS and ARGV as admission() (limits.lua), then KEYS[n+3] the session hash and
-- ARGV[7+2n..] merge.lua's max_bytes, ttl_ms, want_result (ignored), lengths,
-- data. Returns {outcome, wait_us, bad, size} (outcome 4 = over max_bytes), or
-- 0 when admitted and written with nothing corrupt met (one reply line to read).
local outcome, wait, tats = admission()
if outcome ~= 0 then return {outcome, wait, bad, 0} end
local n = tonumber(ARGV[2])
local a = 7 + 2 * n
local key = KEYS[n + 3]
local plan = plan_merge(key, ARGV[a + 3], ARGV[a + 4], {})
take(tats)
if plan.size > tonumber(ARGV[a]) then return {4, 0, bad, plan.size} end
apply_merge(key, plan, ARGV[a + 1])
reserve()
if bad == 0 then return 0 end
return {0, 0, bad, plan.size}
