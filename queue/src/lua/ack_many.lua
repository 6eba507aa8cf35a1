-- Finish several tasks of one rule that the worker holds, in one round trip: each exactly as
-- ack.lua finishes one, fenced by its own lease, so a lost lease spoils only its own task.
-- ARGV[1] rule key prefix  ARGV[2] worker id, then groups of nine, as ack.lua's ARGV[3..11]:
-- task id, lease token, outcome, bytes, ledger op, key hash, entry, upload record, report line
-- Returns one number per group: 1, or 0 when that task's lease was lost.
if (#ARGV - 2) % 9 ~= 0 then return redis.error_reply('ERR bad ack groups') end
local out = {}
for i = 3, #ARGV, 9 do
  out[#out + 1] = ack_one(ARGV[1], ARGV[2], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8])
end
ledger_save()
return out
