-- Iteration n's report lines were written out as part P: drop them from the list, and move
-- the next part's number on, at once, fenced by the leader lease. A compare-and-set on the
-- part number: sent again (its reply lost), it changes nothing. A coordinator that dies after
-- writing part P and before this step writes part P again, from the same first lines.
-- KEYS[1] leader lease  KEYS[2] the report list  KEYS[3] the next part's number
-- ARGV[1] leader token  ARGV[2] P  ARGV[3] lines written
-- Returns 1, or 0 when part P was recorded already.
local refused = fence(KEYS[1], ARGV[1])
if refused then return refused end
local part, count = tonumber(ARGV[2]), tonumber(ARGV[3])
if not part or not count then return redis.error_reply('ERR bad report part') end
if tonumber(redis.call('GET', KEYS[3]) or '1') ~= part then return 0 end
redis.call('LTRIM', KEYS[2], count, -1)
redis.call('SET', KEYS[3], part + 1)
return 1
