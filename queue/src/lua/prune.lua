-- Forget old write intents: those made before the cutoff, of the given slots. Run after an
-- iteration succeeded that started at least the stray-write horizon after them, so any such
-- write that landed was seen, and repaired, by that iteration.
-- KEYS[1] write intents
-- ARGV[1] cutoff (ms)  ARGV[2..] slots
-- Returns the number of slots given.
for i = 2, #ARGV do intent_prune(KEYS[1], ARGV[i], tonumber(ARGV[1])) end
return #ARGV - 1
