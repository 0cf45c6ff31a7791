-- Reset: deletes the limiter key KEYS[1]. Reply: the number of keys deleted.
return redis.call('DEL', KEYS[1])
