-- Reset: deletes the limiter's keys, KEYS[1] and any others (one per part of
-- All). Reply: the number of keys deleted.
return redis.call('DEL', unpack(KEYS))
