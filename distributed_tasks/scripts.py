"""The Lua scripts, as named constants.

Each touches the keys of one hash tag only (one name, the node set, or the
orchestrator), so it is atomic on a single server and valid on Redis Cluster.
Times that must agree across hosts (heartbeats, liveness) come from Redis'
own ``TIME``, never from a client clock.
"""

from __future__ import annotations

import functools
from typing import Any

from redis.client import Pipeline
from redis.cluster import ClusterPipeline

from distributed_tasks.connection import get_redis

# Name keys store their task list and name; ARGV[1] and ARGV[2] of the scripts
# that write one carry them. A key whose stored identity differs (written in the
# old, ambiguous key format) counts as missing and is replaced.

# claim(key, task list, name, reuse policy, run id of a stale claim that may be
# replaced ("" for none), cut-off: a run finished before it no longer holds the name,
# the new status as a table of field/value pairs).
# Returns {1} when claimed, {0, conflict} when a run is active, {2, conflict} when a
# finished run still holds the name and the reuse policy forbids taking it, and
# {1, 'again'} when the name is already claimed by this very run: the same call run a
# second time (redis-py re-sends a command whose reply a dropped connection lost), which
# must not refuse its own start (a claim with no row, blocking the name for a while).
_CLAIM_FUNCTION = """
local function claim(key, task_list, name, reuse, replace, cutoff, fields)
  local cur = redis.call('HMGET', key, 'run_id', 'node', 'state', 'queued_at', 'attempt',
                        'finished_at', 'task_list', 'name')
  local state = cur[3]
  if cur[7] ~= task_list or cur[8] ~= name then state = nil end
  if state == 'QUEUED' then
    for i = 1, #fields - 1, 2 do
      if fields[i] == 'run_id' then
        if fields[i + 1] == cur[1] then return {1, 'again'} end
        break
      end
    end
  end
  if state and (cur[1] or '') ~= replace then
    if state == 'QUEUED' or state == 'RUNNING' then return {0, cur} end
    local recent = (tonumber(cur[6] or '0') or 0) >= cutoff
    if recent and (reuse == 'reject' or (reuse == 'allow_failed_only' and state == 'DONE')) then
      return {2, cur}
    end
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'task_list', task_list, 'name', name, unpack(fields))
  return {1}
end
"""

# KEYS[1] run key. ARGV[1] task list, ARGV[2] name, ARGV[3] reuse policy, ARGV[4] run
# id of a stale claim that may be replaced ("" for none), ARGV[5] cut-off, ARGV[6..] the
# new status as field/value pairs. Returns claim()'s reply.
CLAIM = (
    _CLAIM_FUNCTION
    + "return claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), "
    "{unpack(ARGV, 6)})"
)

# One start's claim and its node-load count in one call, on one server (the loads hash has
# a hash tag of its own: on Redis Cluster the count goes in a pipeline beside CLAIM).
# KEYS[1] run key, KEYS[2] loads hash. ARGV[1..5] as CLAIM's, ARGV[6] the node, ARGV[7..]
# the new status. Counts the run on its node whatever the claim answers, as the pipeline
# does (a refused start gives its count back), but once for a call run again. Returns
# claim()'s reply.
CLAIM_COUNTED = (
    _CLAIM_FUNCTION
    + """
local reply = claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
                    {unpack(ARGV, 7)})
if reply[2] ~= 'again' then redis.call('HINCRBY', KEYS[2], ARGV[6], 1) end
return reply
"""
)

# A batch of claims in one call, on one server (the keys of many names span hash slots:
# on Redis Cluster each name goes through CLAIM). KEYS[i] the run key of entry i.
# ARGV[1] cut-off, ARGV[2] a JSON array whose entry i is [task list, name, reuse policy,
# field, value, ...]. Returns only the refusals, flat: {i, outcome, conflict, ...}.
CLAIM_MANY = (
    _CLAIM_FUNCTION
    + """
local cutoff = tonumber(ARGV[1])
local refused = {}
for i, entry in ipairs(cjson.decode(ARGV[2])) do
  local reply = claim(KEYS[i], entry[1], entry[2], entry[3], '', cutoff, {unpack(entry, 4)})
  if reply[1] ~= 1 then
    table.insert(refused, i); table.insert(refused, reply[1]); table.insert(refused, reply[2])
  end
end
return refused
"""
)

# A start the database already decided (database_first.py), on one server: its QUEUED
# status, its node's load and its message in one call. KEYS[1] run key, KEYS[2] loads
# hash, KEYS[3] the node's queue list. ARGV[1] task list, ARGV[2] name, ARGV[3] run id,
# ARGV[4] node, ARGV[5] the message, ARGV[6..] the status. The database holds no other
# active run of the name, so the status (marked 'pushed' with the run id) replaces
# whatever another run left (decided by state, never by comparing hosts' clocks); when
# the key already holds this run, its status stays (a status read warmed the cache from
# the row, or a cancel already ended the run). Returns 0, changing nothing, when the key
# holds this run marked pushed: the same call sent again (redis-py re-sends a command
# whose reply a dropped connection lost), which must not count or push twice.
QUEUE = """
local cur = redis.call('HMGET', KEYS[1], 'run_id', 'task_list', 'name', 'pushed')
if cur[2] == ARGV[1] and cur[3] == ARGV[2] and cur[1] == ARGV[3] then
  if cur[4] == ARGV[3] then return 0 end
  redis.call('HSET', KEYS[1], 'pushed', ARGV[3])
else
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'task_list', ARGV[1], 'name', ARGV[2], 'pushed', ARGV[3],
             unpack(ARGV, 6))
end
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
return redis.call('LPUSH', KEYS[3], ARGV[5])
"""

# KEYS[1] run key. ARGV[1] task list, ARGV[2] name, ARGV[3] run id, ARGV[4] attempt,
# ARGV[5] TTL in ms (0: keep for ever), ARGV[6..] status fields. Writes only if the
# key is missing (Redis was flushed) or holds the same run at the same or an older
# attempt, so a stale writer never overwrites a newer run or attempt. Within one
# attempt fields accumulate (started_at survives DONE); a newer attempt replaces the
# whole status.
# ``active_only``: nor over this attempt's outcome (a RUNNING written late must not hide
# the outcome another process recorded meanwhile: a forced cancel, the leader).
_UPDATE_FUNCTION = """
local function update(key, task_list, name, run_id, attempt, ttl, fields, active_only)
  local cur = redis.call('HMGET', key, 'run_id', 'attempt', 'task_list', 'name', 'state')
  local mine = cur[1] and cur[3] == task_list and cur[4] == name
  local held = tonumber(cur[2] or '0') or 0  -- an attempt not ours counts as none
  if mine and (cur[1] ~= run_id or held > attempt) then
    return 0
  end
  if active_only and mine and held == attempt and (cur[5] == 'DONE' or cur[5] == 'FAILED') then
    return 0
  end
  if not mine or held < attempt then redis.call('DEL', key) end
  redis.call('HSET', key, 'task_list', task_list, 'name', name, unpack(fields))
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  return 1
end
"""
UPDATE = (
    _UPDATE_FUNCTION
    + "return update(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), "
    "{unpack(ARGV, 6)}, false)"
)
# UPDATE for a status of an attempt still going (RUNNING): not over its outcome.
UPDATE_ACTIVE = (
    _UPDATE_FUNCTION
    + "return update(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), "
    "{unpack(ARGV, 6)}, true)"
)

# An attempt's outcome and its node's load given back in one call, on one server (as
# CLAIM_COUNTED: on Redis Cluster the loads hash is in another slot, and the count goes in
# a pipeline beside UPDATE). KEYS[1] run key, KEYS[2] loads hash. ARGV[1..5] as UPDATE's,
# ARGV[6] the node, ARGV[7..] the status. Returns the node's load after.
UPDATE_COUNTED = (
    _UPDATE_FUNCTION
    + """
update(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
       {unpack(ARGV, 7)}, false)
return redis.call('HINCRBY', KEYS[2], ARGV[6], -1)
"""
)

# KEYS[1] run key. ARGV[1] task list, ARGV[2] name, ARGV[3] TTL in ms (0: none),
# ARGV[4..] the status. Writes only when the key holds nothing for this name: used to
# warm the cache from the database.
FILL = """
local cur = redis.call('HMGET', KEYS[1], 'task_list', 'name')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'task_list', ARGV[1], 'name', ARGV[2], unpack(ARGV, 4))
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

# KEYS[1] run key. ARGV[1] task list, ARGV[2] name, ARGV[3] run id, ARGV[4] attempt,
# ARGV[5..] field/value pairs. Adds them to the status of that attempt while it is
# active (progress, a cancel request); a stale attempt, or a finished run, changes nothing.
SET_IF_ATTEMPT = """
local cur = redis.call('HMGET', KEYS[1], 'task_list', 'name', 'run_id', 'attempt', 'state')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] or cur[4] ~= ARGV[4] then
  return 0
end
if cur[5] ~= 'RUNNING' and cur[5] ~= 'QUEUED' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
return 1
"""

# KEYS[1] run key. ARGV[1] run id, ARGV[2] (optional) attempt. Drops a claim that its
# owner could not back with a database row (compare-and-delete, never a bare DEL of
# someone else's claim, nor of another attempt's when one is named).
RELEASE = """
local cur = redis.call('HMGET', KEYS[1], 'run_id', 'state', 'attempt')
if ARGV[2] and (cur[3] or '') ~= ARGV[2] then return 0 end
if (cur[1] or '') == ARGV[1] and (cur[2] == 'QUEUED' or cur[2] == 'RUNNING') then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# The pulse: every heartbeat and cluster read records that Redis answered (pulse key,
# server time in ms). A pulse that finds the last one older than the gap threshold
# records that interval as the gap: nobody reached Redis then (it was away, partitioned
# from everyone, or restarted from a snapshot), so nodes could not heartbeat either. A
# gap that follows the last one by less than the node timeout extends it (Redis that
# flaps: a node may have missed the short time it answered in between). The writes go
# through pcall: a Redis out of memory still answers the read around them. A stored time
# that Redis's clock cannot have written (not a number, NaN, infinite, negative, after
# now) counts as none: it would excuse every silence, or stop the pulse for good.
# Used as: PULSE .. "pulse(now, pulse key, gap key, threshold ms, node timeout ms)".
PULSE = """
local function past(value, now)
  local ms = tonumber(value)
  if ms and ms == ms and ms >= 0 and ms <= now then return ms end
  return nil
end
local function gap_of(gap_key, now)
  local gap = redis.call('GET', gap_key)
  local colon = gap and string.find(gap, ':', 1, true)
  if not colon then return 0, 0 end
  local start = past(string.sub(gap, 1, colon - 1), now)
  local ended = past(string.sub(gap, colon + 1), now)
  if not (start and ended) then return 0, 0 end
  return start, ended
end
local function pulse(now, pulse_key, gap_key, threshold, timeout)
  local last = past(redis.call('GET', pulse_key), now) or 0
  if last > 0 and now - last > threshold then
    local start = last
    local before, ended = gap_of(gap_key, now)
    if ended > 0 and last - ended < timeout then start = math.min(before, last) end
    redis.pcall('SET', gap_key, string.format('%.0f:%.0f', start, now))
  end
  if now > last then redis.pcall('SET', pulse_key, string.format('%.0f', now)) end
end
"""

# KEYS[1] members zset, KEYS[2] node key, KEYS[3] membership version, KEYS[4] running
# key, KEYS[5] incarnation key, KEYS[6] pulse, KEYS[7] gap. ARGV[1] node name, ARGV[2]
# node info (JSON), ARGV[3] TTL in ms, ARGV[4] the attempts it executes (JSON list; ""
# when this heartbeat does not report them), ARGV[5] gap threshold in ms.
# Returns {server time in ms, previous info or false}.
HEARTBEAT = (
    PULSE
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
pulse(now, KEYS[6], KEYS[7], tonumber(ARGV[5]), tonumber(ARGV[3]))
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
local previous = redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3], 'GET')
if ARGV[4] ~= '' then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[3]) end
redis.call('SET', KEYS[5], '1', 'PX', ARGV[3])
if added == 1 then redis.call('INCR', KEYS[3]) end
return {now, previous}
"""
)

# KEYS[1] members zset, KEYS[2] node key, KEYS[3] membership version, KEYS[4] known set.
# ARGV[1] node name, ARGV[2] incarnation. A node leaving on a graceful stop.
LEAVE = """
local info = redis.call('GET', KEYS[2])
if info and not string.find(info, ARGV[2], 1, true) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[4], ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then redis.call('INCR', KEYS[3]) end
return 1
"""

# KEYS[1] members zset, KEYS[2] membership version, KEYS[3] loads hash, KEYS[4] intact
# marker, KEYS[5] pulse, KEYS[6] gap. ARGV[1] node timeout in ms, ARGV[2] node key
# prefix, ARGV[3] gap threshold in ms.
# Returns {now, version, {name, last_seen, info, ...}, loads as a flat list,
# intact marker present (0/1), stale member names, end of the last gap (0: none)}. A
# stale member is silent for the node timeout outside the last gap: one whose heartbeats
# stopped only while nobody could reach Redis is neither live nor stale until it had the
# time to beat again.
LIVE_NODES = (
    PULSE
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
pulse(now, KEYS[5], KEYS[6], tonumber(ARGV[3]), tonumber(ARGV[1]))
local timeout = tonumber(ARGV[1])
local cutoff = now - timeout
local names = redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf', 'WITHSCORES')
local nodes = {}
for i = 1, #names, 2 do
  local info = redis.call('GET', ARGV[2] .. names[i])
  if info then
    table.insert(nodes, names[i]); table.insert(nodes, names[i + 1]); table.insert(nodes, info)
  end
end
local version = redis.call('GET', KEYS[2]) or '0'
local gap_start, gap_end = gap_of(KEYS[6], now)
local silent = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'WITHSCORES')
local stale = {}
for i = 1, #silent, 2 do
  local seen = tonumber(silent[i + 1])
  local unseen = math.max(0, math.min(now, gap_end) - math.max(seen, gap_start))
  if now - seen - unseen >= timeout then table.insert(stale, silent[i]) end
end
return {now, version, nodes, redis.call('HGETALL', KEYS[3]), redis.call('EXISTS', KEYS[4]), stale,
        gap_end}
"""
)

# KEYS[1] members zset, KEYS[2] node key, KEYS[3] membership version, KEYS[4] known set.
# ARGV[1] node name, ARGV[2] node timeout in ms. Forgets a node whose heartbeat is stale;
# returns 1 only for the call that removed it, so node_lost is sent once.
FORGET_NODE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) >= now - tonumber(ARGV[2]) then return 0 end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local known = redis.call('SREM', KEYS[4], ARGV[1])
if removed == 1 then redis.call('INCR', KEYS[3]) end
return math.max(removed, known)
"""

# KEYS[1] run key. ARGV[1] run id. Drops the cached status of a finished run (the
# reaper, once CLEANUP_TIMEOUT passed), never a newer run of the same name.
EXPIRE_FINISHED = """
local cur = redis.call('HMGET', KEYS[1], 'run_id', 'state')
if cur[1] == ARGV[1] and (cur[2] == 'DONE' or cur[2] == 'FAILED') then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# KEYS[1] a name key. Deletes it only if it stores no task list: a key of the old
# format (before KEY_FORMAT 2), which nothing reads any more.
DROP_OLD_FORMAT = """
if redis.call('HEXISTS', KEYS[1], 'task_list') == 1 then return 0 end
return redis.call('DEL', KEYS[1])
"""


class RegisteredScript:
    """A script called by SHA (EVALSHA, EVAL on a miss); inside a pipeline, as EVAL.

    redis-py sends ``SCRIPT EXISTS`` before executing any pipeline that holds a
    ``Script``: one more round trip per start, per worker status update. EVAL carries
    the source instead (a few hundred bytes) and Redis caches it by its SHA.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.registered = get_redis().register_script(source)

    def __call__(self, keys: Any = (), args: Any = (), client: Any = None) -> Any:
        if isinstance(client, (Pipeline, ClusterPipeline)):
            # execute_command: a cluster pipeline's eval() is not Redis' EVAL.
            return client.execute_command("EVAL", self.source, len(keys), *keys, *args)
        return self.registered(keys=keys, args=args, client=client)


@functools.cache
def script(source: str) -> RegisteredScript:
    """The registered script for ``source`` on the current client."""
    return RegisteredScript(source)


def reset() -> None:
    script.cache_clear()
