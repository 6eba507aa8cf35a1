-- The leader lease of one rule: at most one coordinator plans a rule at a time.
-- KEYS[1] leader key
-- ARGV[1] op: 'acquire', 'renew' or 'release'  ARGV[2] coordinator id  ARGV[3] lease ms
-- Returns 1 when the caller holds (or, for release, held) the lease, else 0.
local op, id = ARGV[1], ARGV[2]
if op == 'acquire' then
  if redis.call('SET', KEYS[1], id, 'NX', 'PX', ARGV[3]) then return 1 end
  if redis.call('GET', KEYS[1]) == id then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  return 0
end
if redis.call('GET', KEYS[1]) ~= id then return 0 end
if op == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
