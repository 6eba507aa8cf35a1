-- Shared by the task scripts (prepended to each when it is loaded).
-- KEYS of every task script: [1] tasks  [2] attempts  [3] errors  [4] leases  [5] owners
-- [6] delayed  [7] dead  [8] shards  [9] fence  [10] intents  [11] flow  [12] ledger shape.

-- Refuses a coordinator write whose leader token is not the rule's current lease (a former
-- leader, paused or partitioned past its lease). An empty token (tools, tests) is not fenced.
local function fence(leader_key, token)
  if token ~= '' and redis.call('GET', leader_key) ~= token then
    return redis.error_reply('FENCED the leader lease is held by another coordinator')
  end
  return nil
end

-- Refuses a coordinator write to an iteration record (`record`) unless the writer holds the
-- leader lease and the iteration is still running.
local function fence_running(leader_key, token, record)
  local fenced = fence(leader_key, token)
  if fenced then return fenced end
  if redis.call('HGET', record, 'state') ~= 'running' then
    return redis.error_reply('STALE the iteration is not running')
  end
  return nil
end

-- Redis server time in milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether `worker` still holds task `id` under lease `token` (the fencing check).
local function holds(id, worker, token)
  return redis.call('HGET', KEYS[5], id) == worker .. '|' .. token
end

-- Flow control per shard: the rules of core/src/flow.rs, in the same order, on the state
-- kept in KEYS[11] as SHARD:n (in flight), :l (limit, 0 = not throttled), :c (ceiling),
-- :p (probing), :po (the probe's task id), :np (next probe, ms), :b (backoff, ms),
-- :t (throttle answers in all).
local FIRST_BACKOFF, MAX_BACKOFF = 1000, 4000
local FLOW_FIELDS = {'n', 'l', 'c', 'p', 'po', 'np', 'b', 't'}

local function shard_of(id)
  return string.match(id, '^%d+:(%d+):')
end

local function flow_get(shard)
  local names = {}
  for i, f in ipairs(FLOW_FIELDS) do names[i] = shard .. ':' .. f end
  local v = redis.call('HMGET', KEYS[11], unpack(names))
  return {
    n = tonumber(v[1] or '0'), l = tonumber(v[2] or '0'), c = tonumber(v[3] or '0'),
    p = v[4] == '1', po = v[5] or '', np = tonumber(v[6] or '0'), b = tonumber(v[7] or '0'),
    t = tonumber(v[8] or '0'),
  }
end

local function flow_put(shard, f)
  redis.call('HSET', KEYS[11],
    shard .. ':n', f.n, shard .. ':l', f.l, shard .. ':c', f.c, shard .. ':p', f.p and 1 or 0,
    shard .. ':po', f.po, shard .. ':np', string.format('%d', f.np),
    shard .. ':b', f.b, shard .. ':t', f.t)
end

-- 'yes', 'probe' or 'no': what may be claimed from the shard now.
local function flow_admit(f, now)
  if f.l == 0 then return 'yes' end
  if f.p then
    if f.po == '' and now >= f.np then return 'probe' end
    return 'no'
  end
  if f.n < f.l then return 'yes' end
  return 'no'
end

-- Applies one event to the flow state of task `id`'s shard: 'succeeded', 'throttled' or
-- 'ended' (claims are counted by claim.lua itself).
local function flow_event(id, kind, now)
  local shard = shard_of(id)
  if not shard then return end
  local f = flow_get(shard)
  local probe = f.po == id
  local before = f.n
  if f.n > 0 then f.n = f.n - 1 end
  if kind == 'succeeded' then
    if probe then
      f.po = ''
      f.p = false
      f.b = FIRST_BACKOFF
    end
    if f.l > 0 and not f.p then
      f.l = f.l + 1
      if f.l >= f.c then
        f.l, f.c, f.p, f.po, f.np, f.b = 0, 0, false, '', 0, 0
      end
    end
  elseif kind == 'throttled' then
    f.t = f.t + 1
    if probe then f.po = '' end
    if f.l == 0 then
      f.c = math.max(before, 1)
      f.l = math.max(math.floor(before / 2), 1)
      f.b = FIRST_BACKOFF
      f.p = true
      f.np = now + f.b
    elseif probe or not f.p then
      f.l = math.max(math.floor(f.l / 2), 1)
      if f.p then
        f.b = math.min(f.b * 2, MAX_BACKOFF)
      else
        f.b = FIRST_BACKOFF
        f.p = true
      end
      f.np = now + f.b
    end
  else
    if probe then f.po = '' end
  end
  flow_put(shard, f)
end

-- Removes a held task and counts `outcome` (and its bytes) in the task's iteration.
-- An outcome `a+b` counts as `a`, and also counts `b` (as `copied+etag_differs`).
local function finish(prefix, id, outcome, bytes)
  local also = string.match(outcome, '%+([%w_]+)$')
  if also then outcome = string.match(outcome, '^([^+]+)') end
  flow_event(id, 'succeeded', now_ms())
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  local record = prefix .. ':it:' .. string.match(id, '^(%d+):')
  redis.call('HINCRBY', record, 'done', 1)
  redis.call('HINCRBY', record, outcome, 1)
  if also then redis.call('HINCRBY', record, also, 1) end
  -- an event's copy (iteration 0): its id carries the event's time; record the lag
  local event_ms = string.match(id, '^0:%d+:%d+:(%d+)')
  if event_ms and outcome == 'copied' then
    local lag = math.max(now_ms() - tonumber(event_ms), 0)
    local band = 'lag_over_30s'
    if lag <= 1000 then band = 'lag_le_1s'
    elseif lag <= 5000 then band = 'lag_le_5s'
    elseif lag <= 30000 then band = 'lag_le_30s' end
    redis.call('HINCRBY', record, band, 1)
    redis.call('HINCRBY', record, 'lag_sum_ms', string.format('%d', lag))
    if lag > tonumber(redis.call('HGET', record, 'lag_max_ms') or '0') then
      redis.call('HSET', record, 'lag_max_ms', string.format('%d', lag))
    end
    redis.call('HSET', record, 'lag_last_ms', string.format('%d', lag))
  end
  if bytes > 0 then
    redis.call('HINCRBY', record, outcome .. '_bytes', string.format('%d', bytes))
  end
  -- per-second throughput, kept two minutes, for `ferry queues`
  local tp = prefix .. ':tp:' .. string.format('%d', math.floor(now_ms() / 1000))
  redis.call('HINCRBY', tp, 'n', 1)
  if bytes > 0 then redis.call('HINCRBY', tp, 'b', string.format('%d', bytes)) end
  redis.call('EXPIRE', tp, 120)
end

-- Forgets a multipart upload's record and its part ETags.
local function drop_upload(prefix, rid)
  if rid and rid ~= '' then
    redis.call('HDEL', prefix .. ':uploads', rid)
    redis.call('DEL', prefix .. ':up:' .. rid)
  end
end


-- The 12-byte ledger slot of a version 2 task payload (nil for older payloads).
local function slot_of(payload)
  if payload and string.byte(payload, 1) == 2 and #payload >= 13 then
    return string.sub(payload, 2, 13)
  end
  return nil
end

-- Write intents: intents[slot] = 'token@ms,token@ms,...', one entry per claim of a task that
-- may write the slot's destination key and has not acked that write yet.
-- The task scripts keep them in KEYS[10]; plan.lua passes its own key.
local function intent_add(slot, token, now)
  local item = token .. '@' .. string.format('%d', now)
  local v = redis.call('HGET', KEYS[10], slot)
  if v then item = v .. ',' .. item end
  redis.call('HSET', KEYS[10], slot, item)
end

-- Keeps the entries of `slot` in hash `key` for which keep(token, ms) holds.
local function intent_filter(key, slot, keep)
  local v = redis.call('HGET', key, slot)
  if not v then return end
  local kept = {}
  for item in string.gmatch(v, '[^,]+') do
    local token, ms = string.match(item, '^(%d+)@(%d+)$')
    if token and keep(token, tonumber(ms)) then kept[#kept + 1] = item end
  end
  if #kept == 0 then
    redis.call('HDEL', key, slot)
  else
    redis.call('HSET', key, slot, table.concat(kept, ','))
  end
end

-- Forgets the intent of one claim (its write was acked, or never started).
local function intent_drop(slot, token)
  if slot then intent_filter(KEYS[10], slot, function(t, _) return t ~= token end) end
end

-- Forgets the intents of `slot` in hash `key` made before `cutoff` (ms): writes that old can
-- no longer land (see ARCHITECTURE.md, "Late writes").
local function intent_prune(key, slot, cutoff)
  intent_filter(key, slot, function(_, ms) return ms >= cutoff end)
end

-- The ledger (see core/src/ledger.rs). A key is known by its 16-byte hash `h` (xxh3-128,
-- little-endian). Its entry lives in hash PREFIX:l:BUCKET under a field cut from `h`.
-- The rule's ledger shape, KEYS[12], says how buckets are chosen:
-- - `legacy` = 1 (a ledger written before the shape existed): 65,536 fixed buckets, chosen by
--   bytes 9-10 of `h`, with bytes 1-8 as the field;
-- - otherwise linear hashing, so the buckets grow with the rule: the address is bytes 9-12
--   (a 32-bit number), the field is the address then bytes 1-6 (10 bytes, so a bucket can be
--   split from its fields alone), and with `bits` and `split` the bucket is
--   address mod 2^bits, or address mod 2^(bits+1) below `split`. `n` counts the entries;
--   each entry added past `load` (LEDGER_LOAD unless set) per bucket splits bucket `split`
--   in two.
local LEDGER_LOAD, LEDGER_MAX_BITS = 40, 31

local function le32(s, i)
  local a, b, c, d = string.byte(s, i, i + 3)
  return a + 256 * b + 65536 * c + 16777216 * d
end

-- The shape, read once per script run; a script that writes the ledger calls ledger_save()
-- before it returns.
local ledger_state = nil
local function ledger_shape()
  if not ledger_state then
    local s = redis.call('HMGET', KEYS[12], 'legacy', 'bits', 'split', 'n', 'load')
    ledger_state = {legacy = s[1] == '1', bits = tonumber(s[2]) or 0,
      split = tonumber(s[3]) or 0, n = tonumber(s[4]) or 0,
      load = tonumber(s[5]) or LEDGER_LOAD, dirty = false}
  end
  return ledger_state
end

local function ledger_save()
  local shape = ledger_state
  if shape and shape.dirty then
    redis.call('HSET', KEYS[12], 'n', string.format('%d', shape.n),
      'bits', string.format('%d', shape.bits), 'split', string.format('%d', shape.split))
    shape.dirty = false
  end
end

-- The ledger hash and field of `h`.
local function ledger_where(prefix, shape, h)
  if shape.legacy then
    return prefix .. ':l:' .. (string.byte(h, 9) + 256 * string.byte(h, 10)), string.sub(h, 1, 8)
  end
  local address = le32(h, 9)
  local bucket = address % 2 ^ shape.bits
  if bucket < shape.split then bucket = address % 2 ^ (shape.bits + 1) end
  return prefix .. ':l:' .. string.format('%d', bucket), string.sub(h, 9, 12) .. string.sub(h, 1, 6)
end

-- Splits bucket `split` into itself and `split` + 2^bits, by the next bit of each address.
local function ledger_split(prefix, shape)
  local low = 2 ^ shape.bits
  local from = prefix .. ':l:' .. string.format('%d', shape.split)
  local to = prefix .. ':l:' .. string.format('%d', shape.split + low)
  local all = redis.call('HGETALL', from)
  for i = 1, #all, 2 do
    if math.floor(le32(all[i], 1) / low) % 2 == 1 then
      redis.call('HSET', to, all[i], all[i + 1])
      redis.call('HDEL', from, all[i])
    end
  end
  shape.split = shape.split + 1
  if shape.split == low then
    shape.bits, shape.split = shape.bits + 1, 0
  end
end

-- Applies a ledger op: 'put' `entry` for `h`, 'del' its entry, or '' nothing.
local function ledger_write(prefix, op, h, entry)
  if op ~= 'put' and op ~= 'del' then return end
  local shape = ledger_shape()
  local ledger, field = ledger_where(prefix, shape, h)
  local changed
  if op == 'put' then
    changed = redis.call('HSET', ledger, field, entry)
  else
    changed = -redis.call('HDEL', ledger, field)
  end
  if changed == 0 or shape.legacy then return end
  shape.n = shape.n + changed
  shape.dirty = true
  if changed > 0 and shape.bits < LEDGER_MAX_BITS
    and shape.n > shape.load * (2 ^ shape.bits + shape.split) then
    ledger_split(prefix, shape)
  end
end

-- Finishes held task `id` of `worker` under lease `token`: counts `outcome` and `bytes`,
-- applies the ledger op ('' none, 'put' or 'del' of key hash `h`, with `entry`) and forgets
-- upload record `rid`. Returns 1, or 0 when the lease was lost (then nothing is changed).
local function ack_one(prefix, worker, id, token, outcome, bytes, op, h, entry, rid, line)
  if not holds(id, worker, token) then return 0 end
  intent_drop(slot_of(redis.call('HGET', KEYS[1], id)), token)
  -- the iteration's report line (rules with a `report`), written once, with the ack
  local it = string.match(id, '^(%d+):')
  if line and line ~= '' and it ~= '0' then
    redis.call('RPUSH', prefix .. ':rp:' .. it, line)
  end
  finish(prefix, id, outcome, tonumber(bytes))
  ledger_write(prefix, op, h, entry)
  drop_upload(prefix, rid)
  return 1
end
