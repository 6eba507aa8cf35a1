-- Claim up to N ready tasks of one rule under a lease; first return due retries to their
-- queues and requeue (or bury) tasks whose lease expired. With N = 0 it only does the upkeep.
-- Each claim records a write intent for its task's key (see lib.lua); an expired lease keeps
-- its intent, since the write it was making may still land.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] lease ms  ARGV[4] N
-- ARGV[5] max attempts  ARGV[6] shard offset (spreads workers over shards)
-- ARGV[7] most part tasks (ids ending ':p') to take, so one worker does not take every part
-- of a large object while other workers stand idle
-- Returns a flat array: id, token, attempts, payload for each claimed task.
local now = now_ms()
local prefix = ARGV[1]
local max_attempts = tonumber(ARGV[5])

local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, 500)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[6], id)
  local shard = string.match(id, '^%d+:(%d+):')
  redis.call('LPUSH', prefix .. ':q:' .. shard, id)
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 500)
for _, id in ipairs(expired) do
  flow_event(id, 'ended', now)
  redis.call('ZREM', KEYS[4], id)
  local owner = redis.call('HGET', KEYS[5], id) or '?'
  redis.call('HDEL', KEYS[5], id)
  local attempts = redis.call('HINCRBY', KEYS[2], id, 1)
  local holder = string.match(owner, '^(.*)|') or owner
  redis.call('HSET', KEYS[3], id, 'lease expired while held by worker ' .. holder)
  local iter, shard = string.match(id, '^(%d+):(%d+):')
  if attempts >= max_attempts then
    redis.call('ZADD', KEYS[7], now, id)
    redis.call('HINCRBY', prefix .. ':it:' .. iter, 'dead', 1)
  else
    -- to the claiming end: a task whose worker died is picked up next
    redis.call('RPUSH', prefix .. ':q:' .. shard, id)
  end
end

local want = tonumber(ARGV[4])
local out = {}
if want <= 0 then return out end
local shards = redis.call('SMEMBERS', KEYS[8])
local count = #shards
if count == 0 then return out end
local offset = tonumber(ARGV[6]) % count
local lease_until = now + tonumber(ARGV[3])
local parts_left = tonumber(ARGV[7])
local blocked = {}
-- each shard's flow state, read once, kept up to date as this claim takes its tasks
local flows = {}
local got = 0
local progress = true
-- one task per shard per pass, so a deep shard does not starve the others
while got < want and progress do
  progress = false
  for i = 0, count - 1 do
    if got >= want then break end
    local shard = shards[((offset + i) % count) + 1]
    local queue = prefix .. ':q:' .. shard
    if not flows[shard] then flows[shard] = flow_get(shard) end
    local admit = flow_admit(flows[shard], now)
    -- a throttled shard at its limit (or waiting for its probe) is left alone
    if admit == 'no' then blocked[shard] = true end
    local id = not blocked[shard] and redis.call('RPOP', queue)
    if id and string.sub(id, -2) == ':p' and parts_left <= 0 then
      -- put it back where it was, and leave this shard alone for the rest of the claim
      redis.call('RPUSH', queue, id)
      blocked[shard] = true
      id = nil
    end
    if id then
      progress = true
      local payload = redis.call('HGET', KEYS[1], id)
      if payload then
        if string.sub(id, -2) == ':p' then parts_left = parts_left - 1 end
        local f = flows[shard]
        f.n = f.n + 1
        if admit == 'probe' then
          f.po = id
          blocked[shard] = true
        end
        flow_put(shard, f)
        local token = string.format('%d', redis.call('INCR', KEYS[9]))
        redis.call('ZADD', KEYS[4], lease_until, id)
        redis.call('HSET', KEYS[5], id, ARGV[2] .. '|' .. token)
        -- until this claim acks, its write may land at any time, even after its lease
        local slot = slot_of(payload)
        if slot then intent_add(slot, token, now) end
        local attempts = redis.call('HGET', KEYS[2], id) or '0'
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = attempts
        out[#out + 1] = payload
        got = got + 1
      end
    end
  end
end
return out
