"""The Lua scripts of readstate.py (its docstring says what the keys hold). On a Redis Cluster
every script touches the keys of one conversation shard only (keyspace.conv_shard): one
conversation's room, tombstones, the user's hashes of that shard and the shard's dirty set."""

from __future__ import annotations

# A mark, as a Lua function (one script makes many in confirms.py): room, user, dirty, gone,
# meta; uid, cid, seq, evidence, took_part ('1', '0', '' unknown) -> {status, previous, visible}
MARK_FN = """
local function mark(room, user, dirty, gone, meta, uid, cid, seq_arg, evidence, known)
  if redis.call('EXISTS', user) == 0 then return {-2, 0, 0} end
  local share = redis.call('HGET', meta, 'share')
  if not share then return {-2, 0, 0} end
  if tonumber(redis.call('HGET', gone, uid) or '0') > tonumber(evidence) then return {-3, 0, 0} end
  local old = tonumber(redis.call('HGET', user, cid) or '0')
  local seq = tonumber(seq_arg)
  if seq <= old then return {0, old, 0} end
  local took = redis.call('HGET', meta, 'p:' .. cid)
  local visible = 0
  if share == '1' then
    if took == '1' or known == '1' then visible = 1
    elseif took ~= '0' and known == '' then return {-4, old, 0} end
  end
  if visible == 1 and redis.call('EXISTS', room) == 0 then return {-1, 0, 0} end
  if known == '1' then redis.call('HSET', meta, 'p:' .. cid, '1')
  elseif known == '0' then redis.call('HSETNX', meta, 'p:' .. cid, '0') end
  redis.call('HSET', user, cid, seq)
  if visible == 1 then redis.call('ZADD', room, 'GT', seq, uid) end
  redis.call('SADD', dirty, cid .. ':' .. uid)
  return {1, old, visible}
end
"""
MARK = MARK_FN + "return mark(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], unpack(ARGV))"

# KEYS: room, gone; ARGV: the users' meta key prefix, then seq1, uid1, joined1, seq2, ... from
# Postgres (members who share and took part). GT: never lowers a newer live mark. Postgres may
# be older than Redis: a member removed since (a tombstone newer than the membership read) or
# who stopped sharing since (the user's `share` in chatd:lm, when loaded) is left out.
LOAD_ROOM = """
redis.call('ZADD', KEYS[1], 'GT', -1, '0')
for i = 2, #ARGV, 3 do
  local uid = ARGV[i + 1]
  local removed = tonumber(redis.call('HGET', KEYS[2], uid) or '0') > tonumber(ARGV[i + 2])
  local private = redis.call('HGET', ARGV[1] .. uid, 'share') == '0'
  if not removed and not private then redis.call('ZADD', KEYS[1], 'GT', ARGV[i], uid) end
end
return 1
"""

# KEYS: user, meta (of one shard); ARGV: share (1/0), n, cid1, seq1, ..., cidn, seqn, then the
# cids the user took part in (those of the shard). Keeps the larger of the stored and the
# loaded pointer; a `share` already there is newer than Postgres's (a change writes Postgres
# first) and is kept, and made lasting (set_shared may have left it with an expiry).
LOAD_USER = """
local n = tonumber(ARGV[2])
for i = 3, 2 + 2 * n, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
for i = 3 + 2 * n, #ARGV do redis.call('HSET', KEYS[2], 'p:' .. ARGV[i], '1') end
redis.call('HSETNX', KEYS[2], 'share', ARGV[1])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], '_', '1')
return 1
"""

# KEYS: user, meta (of one shard); ARGV: uid, share (1/0), the shard's rooms' key prefix, 1 if
# Postgres has state of the user in the shard, the expiry (s) of a bare flag -> 0, or -2 when
# the user's state must be loaded first. The flag and every room of the shard the user's
# pointers are in, at once (readstate.py). A shard where Postgres has nothing of the user and
# Redis has nothing loaded has none of their pointers in its rooms: it only gets the flag (for
# a load in flight that read Postgres before the change: its HSETNX keeps this one), expiring.
SET_SHARED = """
if redis.call('EXISTS', KEYS[1]) == 0 or not redis.call('HGET', KEYS[2], 'share') then
  if ARGV[4] == '1' then return -2 end
  local bare = redis.call('EXISTS', KEYS[2]) == 0  -- else loaded for the other pointers (lm is shared)
  redis.call('HSET', KEYS[2], 'share', ARGV[2])
  if bare then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
  return 0
end
redis.call('HSET', KEYS[2], 'share', ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local cid = fields[i]
  if string.match(cid, '^%d+$') then
    local room = ARGV[3] .. cid
    if ARGV[2] == '0' then
      redis.call('ZREM', room, ARGV[1])
    elseif redis.call('HGET', KEYS[2], 'p:' .. cid) == '1' and redis.call('EXISTS', room) == 1 then
      redis.call('ZADD', room, 'GT', fields[i + 1], ARGV[1])
    end
  end
end
return 0
"""

# KEYS: room, gone, then each removed user's hash and meta; ARGV: cid, seq of the removal, the
# tombstones' lifetime (s), then the users' ids (in the order of their keys)
FORGET = """
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2 * i - 5], ARGV[1])
  redis.call('HDEL', KEYS[2 * i - 4], 'p:' .. ARGV[1])
  if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0') then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[2])
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: user, meta, room; ARGV: uid, cid. The user took part in cid: their pointer there may
# show. Nothing to do while the user's state is not loaded (Postgres has the flag).
TOOK_PART = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'p:' .. ARGV[2], '1')
local seq = redis.call('HGET', KEYS[1], ARGV[2])
if seq and redis.call('HGET', KEYS[2], 'share') == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZADD', KEYS[3], 'GT', seq, ARGV[1])
end
return 1
"""

# KEYS: range hash, window key; ARGV: lo, hi, window_ms -> 1 when this caller opened the window
WIDEN = """
local lo = tonumber(redis.call('HGET', KEYS[1], 'lo') or ARGV[1])
local hi = tonumber(redis.call('HGET', KEYS[1], 'hi') or ARGV[2])
redis.call('HSET', KEYS[1], 'lo', math.min(lo, tonumber(ARGV[1])), 'hi', math.max(hi, tonumber(ARGV[2])))
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

TAKE_RANGE = """
local r = redis.call('HMGET', KEYS[1], 'lo', 'hi')
redis.call('DEL', KEYS[1])
return r
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
