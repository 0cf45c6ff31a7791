package redislimit

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
)

// redisKey returns the Redis key of key; for All, its first part's.
func (l *Limiter) redisKey(key string) string {
	if l.partKeys != nil {
		return l.redisKeys(key)[0]
	}
	return l.keyPrefix + l.tag(key) + "}"
}

// redisKeys returns the Redis keys of key's parts, for All. A key that
// begins with '}' would leave its Redis keys with an empty hash tag, and
// Redis Cluster would then hash each whole key to a slot of its own: such
// a key's Redis keys are its parts' prefixes without the '{', then '#{',
// the first 32 hex digits of its SHA-256, '}' and the key, so that the
// parts share a slot and no other key has the same Redis keys.
func (l *Limiter) redisKeys(key string) []string {
	tag := l.tag(key)
	keys := make([]string, len(l.partKeys))
	if l.hashes == nil && key[0] == '}' {
		sum := sha256.Sum256([]byte(key))
		tagged := "#{" + hex.EncodeToString(sum[:16]) + "}" + key
		for i, p := range l.partKeys {
			keys[i] = p[:len(p)-1] + tagged
		}
		return keys
	}
	for i, p := range l.partKeys {
		keys[i] = p + tag + "}"
	}
	return keys
}

// tag returns what goes between the braces of key's Redis keys: key, or
// with WithHashedKeys its keyed hash.
func (l *Limiter) tag(key string) string {
	if l.hashes == nil {
		return key
	}
	h := l.hashes.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	l.hashes.Put(h)
	var hx [32]byte
	hex.Encode(hx[:], sum[:16])
	return string(hx[:])
}
