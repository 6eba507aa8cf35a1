-- Finish a task the worker still holds, count its outcome in its iteration, and update the
-- ledger in the same step, so only the current lease holder can ever write the ledger.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] outcome name (e.g. copied)  ARGV[6] bytes moved
-- ARGV[7] ledger op: '' (none), 'put' or 'del'  ARGV[8] the key's 16-byte hash
-- ARGV[9] entry (for 'put')  ARGV[10] multipart upload record to forget ('' = none)
-- ARGV[11] the iteration's report line ('' = none)
-- Returns 1, or 0 when the lease was lost (then nothing is changed).
local done = ack_one(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
  ARGV[9], ARGV[10], ARGV[11])
ledger_save()
return done
