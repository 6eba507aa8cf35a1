-- Record the versions of a key copied so far (versions = "all"), under the lease, before the
-- task is done: a copy that dies among a key's versions goes on after the last one recorded.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] the key's 16-byte hash  ARGV[6] the key's versions entry
-- Returns 1, or 0 when the lease was lost (then nothing is changed).
if not holds(ARGV[3], ARGV[2], ARGV[4]) then return 0 end
ledger_write(ARGV[1], 'put', ARGV[5], ARGV[6])
ledger_save()
return 1
