-- KEYS[1] the session hash. ARGV: max_bytes, ttl_ms, want_result, lengths, data,
-- then the fields to remove (disjoint from the set fields). Returns -size if
-- refused (nothing written); else the new size, or with want_result == '1' the
-- session after the write as one JSON object text.
local key = KEYS[1]
local removes = {}
for i = 6, #ARGV do removes[#removes + 1] = ARGV[i] end
local plan = plan_merge(key, ARGV[4], ARGV[5], removes)
if plan.size > tonumber(ARGV[1]) then return -plan.size end
apply_merge(key, plan, ARGV[2])
if ARGV[3] ~= '1' then return plan.size end
return session_json(key)
