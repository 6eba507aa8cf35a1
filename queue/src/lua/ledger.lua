-- Read the ledger entries and write intents of keys, write entries directly (tools), or give
-- the ledger its shape.
-- ARGV[1] rule key prefix  ARGV[2] the op, then for 'start' the load (entries per bucket)
-- and per key for 'get' and 'put':
-- get: the key's 16-byte hash and its 12-byte slot; put: its hash and the entry.
-- Returns: get, entry and intents (or nil) per key, flat; put, the number of keys;
-- start (a rule registered now: a growing ledger) and legacy (a rule registered before
-- ledgers could grow: fixed buckets), 1 if the shape was set, 0 if it already had one.
local op = ARGV[2]
if op == 'start' or op == 'legacy' then
  if redis.call('EXISTS', KEYS[12]) == 1 then return 0 end
  if op == 'start' then redis.call('HSET', KEYS[12], 'n', '0', 'load', ARGV[3])
  else redis.call('HSET', KEYS[12], 'legacy', '1') end
  return 1
end
if op == 'put' then
  for i = 3, #ARGV, 2 do ledger_write(ARGV[1], 'put', ARGV[i], ARGV[i + 1]) end
  ledger_save()
  return (#ARGV - 2) / 2
end
local shape = ledger_shape()
local out = {}
for i = 3, #ARGV, 2 do
  local ledger, field = ledger_where(ARGV[1], shape, ARGV[i])
  out[#out + 1] = redis.call('HGET', ledger, field)
  out[#out + 1] = redis.call('HGET', KEYS[10], ARGV[i + 1])
end
return out
