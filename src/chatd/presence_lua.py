"""The Lua scripts of presence.py (its docstring says what the keys hold). On a Redis Cluster
each touches one user shard only (keyspace.user_shard): the user's own keys and the shard's
expiry and pending sets."""

from __future__ import annotations

# KEYS: conns, idle, grace, state, expiries, pending
# ARGV: uid, op, conn, duration_ms, grace_ms, ttl_ms -> {changed, state, version, last_alive_ms}
# last_alive_ms: when the newest expired connection was last known alive (closed, or last
# refreshed before its worker died), for `last_seen`.
APPLY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local uid, op, conn = ARGV[1], ARGV[2], ARGV[3]
local grace = redis.call('SISMEMBER', KEYS[3], conn) == 1
if op == 'connect' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), conn)
  redis.call('SREM', KEYS[2], conn)
  redis.call('SREM', KEYS[3], conn)
elseif op == 'refresh' then
  if not grace then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), conn) end
elseif op == 'idle' then
  if not grace then redis.call('SADD', KEYS[2], conn) end
elseif op == 'active' then
  redis.call('SREM', KEYS[2], conn)
elseif op == 'disconnect' then
  if redis.call('ZSCORE', KEYS[1], conn) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), conn)
    redis.call('SADD', KEYS[3], conn)
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
local last_alive = 0
for i = 1, #expired, 2 do
  local c = expired[i]
  local alive = tonumber(expired[i + 1]) - tonumber(ARGV[6])
  if redis.call('SISMEMBER', KEYS[3], c) == 1 then alive = tonumber(expired[i + 1]) - tonumber(ARGV[5]) end
  if alive > last_alive then last_alive = alive end
  redis.call('SREM', KEYS[2], c)
  redis.call('SREM', KEYS[3], c)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local prev = redis.call('HGET', KEYS[4], 'state') or 'offline'
local active, idle = 0, 0
for _, c in ipairs(live) do
  if redis.call('SISMEMBER', KEYS[3], c) == 0 then
    if redis.call('SISMEMBER', KEYS[2], c) == 1 then idle = idle + 1 else active = active + 1 end
  end
end
local state = prev
if #live == 0 then state = 'offline'
elseif active > 0 then state = 'online'
elseif idle > 0 then state = 'away'
elseif prev == 'offline' then state = 'online' end
if #live > 0 then
  local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('ZADD', KEYS[5], top[2], uid)
else
  redis.call('ZREM', KEYS[5], uid)
end
local version = tonumber(redis.call('HGET', KEYS[4], 'version') or '0')
if state == prev then return {0, state, version, 0} end
version = math.max(version + 1, now)
redis.call('HSET', KEYS[4], 'state', state, 'version', version, 'since', now)
redis.call('ZADD', KEYS[6], now, uid)
return {1, state, version, last_alive}
"""

# KEYS: pending, state; ARGV: uid, version published
PUBLISHED = """
if tonumber(redis.call('HGET', KEYS[2], 'version') or '0') <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""

# KEYS: the users' state hashes. One command for a whole snapshot: a pipeline of one HMGET per
# user costs far more in the client than in Redis. Missing fields come back as "".
STATUSES = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'state', 'version')
  out[2 * i - 1] = v[1] or ''
  out[2 * i] = v[2] or ''
end
return out
"""

# KEYS: conns, idle, grace, state of each user (4 per user). Per user: live connections that are
# active, live ones that are idle, and since when (ms, Redis clock) the user has been away;
# then Redis's clock. Connections in their grace period (closed) are not counted.
ATTENTION = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS, 4 do
  local active, idle = 0, 0
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. now, '+inf')) do
    if redis.call('SISMEMBER', KEYS[i + 2], c) == 0 then
      if redis.call('SISMEMBER', KEYS[i + 1], c) == 1 then idle = idle + 1 else active = active + 1 end
    end
  end
  local v = redis.call('HMGET', KEYS[i + 3], 'state', 'since')
  local since = now
  if v[1] == 'away' and v[2] then since = tonumber(v[2]) end
  table.insert(out, active)
  table.insert(out, idle)
  table.insert(out, since)
end
table.insert(out, now)
return out
"""
