-- Record the multipart upload a worker just created for the object task it holds, so that
-- a retry reuses it and the coordinator can abort it if the copy is abandoned.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id (the record's id)
-- ARGV[4] lease token  ARGV[5] encoded upload record
-- Returns 1, or 0 when the lease was lost (the caller then aborts the upload itself).
local prefix, id = ARGV[1], ARGV[3]
if not holds(id, ARGV[2], ARGV[4]) then return 0 end
redis.call('HSET', prefix .. ':uploads', id, ARGV[5])
return 1
