-- The leader lease of one rule: at most one coordinator plans a rule at a time. The lease's
-- value is a token, `coordinator-id#epoch`, with an epoch counted up at every acquisition, so
-- that a coordinator that lost the lease (paused, partitioned) and then writes is refused even
-- if it leads again by then: its writes carry the old token.
-- KEYS[1] leader key  KEYS[2] epoch counter
-- ARGV[1] op: 'acquire', 'renew' or 'release'  ARGV[2] coordinator id (acquire) or token
-- ARGV[3] lease ms
-- Returns the token (acquire: held or already ours), 1 (renew, release: still ours), or 0.
local op = ARGV[1]
if op == 'acquire' then
  local held = redis.call('GET', KEYS[1])
  if held and string.sub(held, 1, #ARGV[2] + 1) == ARGV[2] .. '#' then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return held
  end
  if held then return 0 end
  local token = ARGV[2] .. '#' .. string.format('%d', redis.call('INCR', KEYS[2]))
  redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
  return token
end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
if op == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
