-- Every bucket and the reservation, all or nothing (see admission() in
-- limits.lua for KEYS and ARGV). Returns {outcome, wait_us, bad}; when refused,
-- nothing changed but repairs.
local outcome, wait, tats = admission()
if outcome ~= 0 then return {outcome, wait, bad} end
take(tats)
reserve()
return {0, 0, bad}
