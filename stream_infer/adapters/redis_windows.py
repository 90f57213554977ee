"""Window state in Redis: one script call per window group, pipelined, per batch.

The script (:data:`SCRIPT`) is the state machine of ``stream_infer.features.live``; the
values are computed in Python by the engine. Keys, for a group's prefix ``P``
(``win2:terminal:1a2b3c4d``) and entity ``e``::

    P:{e}:log   ZSET  event_id scored by event time (ms): the (time, id) order
    P:{e}:ev    HASH  event_id -> "seq|value|value..." (seq: the entity's arrival number)
    P:{e}:lab   HASH  event_id -> "seq,label_time,label;..." (the labels that won, in order)
    P:{e}:memo  HASH  event_id -> the features served, base64 of their float32 (or float64)
                      bits (``live.pack_memo``; written by the next call)
    P:{e}:seq   the entity's arrival counter (events and labels)
    P:dir       HASH  event_id -> entity (groups with a rate: to place a label)
    P:dirz      ZSET  event_id by event time (to trim the directory)
    P:pending   HASH  event_id -> "label_time,label" (labels waiting for their event)
    P:pending:order LIST the pending labels' arrival order (the bound drops the oldest)
    P:wm        the group's watermark: the newest event time seen

Entity keys expire (``PEXPIRE``) a horizon plus half to all of a margin after their last
write: their TTL is set again once the log's has run down by half the margin (one ``PTTL``
per entity and batch, not five ``PEXPIRE``). Rows at or before the horizon (watermark -
allowed lateness - delay - longest length) are trimmed, with the watermark from before the
batch, so a batch re-processed after a crash finds every row its events read the first time.

A script reads the logs of every entity of its batch: keys of many slots. Redis Cluster
refuses that, so window features need a single Redis (or a primary with replicas); the
feature views may still live on a cluster. Eviction would silently corrupt windows:
:func:`check_eviction` refuses a ``maxmemory-policy`` other than ``noeviction`` in the
production profile.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from typing import Any

import redis
import redis.cluster
import redis.exceptions

from ..errors import ConfigError, FeatureStoreError, redact
from ..features.live import GroupRequest
from .redis import _UNAVAILABLE

log = logging.getLogger(__name__)

SCRIPT = r"""
local P = ARGV[1]
local lateness = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local labelled = ARGV[4] == '1'
local capacity = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local at = 7

local function key(entity, kind) return P .. ':{' .. entity .. '}:' .. kind end

local function wins(time, label, held_time, held_label)
  return time > held_time or (time == held_time and label > held_label)
end

local function hmget(k, ids)
  local out = {}
  for i = 1, #ids, 4000 do
    local part = redis.call('HMGET', k, unpack(ids, i, math.min(i + 3999, #ids)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

local function hdel(k, ids)
  for i = 1, #ids, 4000 do redis.call('HDEL', k, unpack(ids, i, math.min(i + 3999, #ids))) end
end

-- 0. the features served to the previous batch's new events
local nmemos = tonumber(ARGV[at]); at = at + 1
local memo_keys = {}
for _ = 1, nmemos do
  local entity, id, served = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  at = at + 3
  if redis.call('HEXISTS', key(entity, 'ev'), id) == 1 then
    local k = key(entity, 'memo')
    redis.call('HSET', k, id, served)
    memo_keys[k] = true
  end
end
for k in pairs(memo_keys) do redis.call('PEXPIRE', k, ttl) end

-- 1. labels
local applied, ignored, pended = 0, 0, 0
local nlabels = tonumber(ARGV[at]); at = at + 1
for _ = 1, nlabels do
  local id, time_text, label_text = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local time, label = tonumber(time_text), tonumber(label_text)
  at = at + 3
  local entity = redis.call('HGET', P .. ':dir', id)
  if entity then
    local k = key(entity, 'lab')
    local history = redis.call('HGET', k, id)
    local held_time, held_label = -math.huge, 0
    if history then
      local t, l = string.match(history, '([^,;]+),([^,;]+)$')
      held_time, held_label = tonumber(t), tonumber(l)
    end
    if wins(time, label, held_time, held_label) then
      local seq = redis.call('INCR', key(entity, 'seq'))
      local entry = seq .. ',' .. time_text .. ',' .. label_text
      redis.call('HSET', k, id, history and (history .. ';' .. entry) or entry)
      redis.call('PEXPIRE', k, ttl)
      applied = applied + 1
    else
      ignored = ignored + 1
    end
  else
    local held = redis.call('HGET', P .. ':pending', id)
    local keep = true
    if held then
      local t, l = string.match(held, '([^,]+),([^,]+)')
      keep = wins(time, label, tonumber(t), tonumber(l))
    end
    if keep then
      redis.call('HSET', P .. ':pending', id, time_text .. ',' .. label_text)
      if not held then redis.call('RPUSH', P .. ':pending:order', id) end
      pended = pended + 1
      while redis.call('HLEN', P .. ':pending') > capacity do
        local oldest = redis.call('LPOP', P .. ':pending:order')
        if not oldest then break end
        redis.call('HDEL', P .. ':pending', oldest)
      end
    else
      ignored = ignored + 1
    end
  end
end

-- 2. read the logs of the batch's entities, back to their earliest event's windows; note
--    the rows at or before the horizon, trimmed in step 4 (the events step 3 writes are
--    newer than the horizon, so the rows to trim are the same before and after it)
local held_mark = redis.call('GET', P .. ':wm')
local before_mark = held_mark and tonumber(held_mark) or nil
local horizon = before_mark and (before_mark - lateness - span) or -math.huge
local n = tonumber(ARGV[at]); at = at + 1
local base = at
local lows, order = {}, {}
for i = 0, n - 1 do
  local j = base + 4 * i
  local entity = ARGV[j + 2]
  if entity ~= '' then
    local t = tonumber(ARGV[j + 1])
    if lows[entity] == nil then
      lows[entity] = t
      order[#order + 1] = entity
    elseif t < lows[entity] then
      lows[entity] = t
    end
  end
end
local olds = {}
local entities, counts, all_ids, all_times, all_rows, all_labs = {}, {}, {}, {}, {}, {}
local nrows = 0
for _, entity in ipairs(order) do
  local low = lows[entity] - span
  local all = redis.call('ZRANGE', key(entity, 'log'), 0, -1, 'WITHSCORES')
  local times, ids, old = {}, {}, {}
  for i = 1, #all, 2 do
    local t = tonumber(all[i + 1])
    if t <= horizon then
      old[#old + 1] = all[i]
    end
    if t > low then
      ids[#ids + 1] = all[i]
      times[#times + 1] = all[i + 1]
    end
  end
  olds[entity] = old
  if #ids > 0 then
    local rows = hmget(key(entity, 'ev'), ids)
    local labs = labelled and hmget(key(entity, 'lab'), ids) or nil
    entities[#entities + 1] = entity
    counts[#counts + 1] = #ids
    for i = 1, #ids do
      local r = nrows + i
      all_ids[r], all_times[r], all_rows[r] = ids[i], times[i], rows[i]
      if labs then all_labs[r] = labs[i] or '' end
    end
    nrows = nrows + #ids
  end
end

-- 3. write the new events, in arrival order
local waiting_any = labelled and redis.call('HLEN', P .. ':pending') > 0
local mark = before_mark
local codes = {}
for i = 0, n - 1 do
  local j = base + 4 * i
  local id, time_text, entity, values = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]
  local t = tonumber(time_text)
  if mark == nil or t > mark then mark = t end
  local ev = entity ~= '' and key(entity, 'ev') or nil
  local held = ev and t > mark - lateness - span and redis.call('HGET', ev, id)
  if entity == '' then
    codes[i + 1] = 'k'
  elseif held then
    local memo = redis.call('HGET', key(entity, 'memo'), id)
    codes[i + 1] = 'd' .. string.match(held, '^[^|]*') .. (memo and ('#' .. memo) or '')
  elseif t < mark - lateness then
    codes[i + 1] = 't'
  else
    do
      local seq = redis.call('INCR', key(entity, 'seq'))
      redis.call('ZADD', key(entity, 'log'), time_text, id)
      redis.call('HSET', ev, id, seq .. '|' .. values)
      local code = 'n' .. seq
      if labelled then
        redis.call('HSET', P .. ':dir', id, entity)
        redis.call('ZADD', P .. ':dirz', time_text, id)
        local waiting = waiting_any and redis.call('HGET', P .. ':pending', id)
        if waiting then
          redis.call('HSET', key(entity, 'lab'), id, seq .. ',' .. waiting)
          redis.call('PEXPIRE', key(entity, 'lab'), ttl)
          redis.call('HDEL', P .. ':pending', id)
          code = code .. ',' .. waiting
        end
      end
      codes[i + 1] = code
    end
  end
end
if mark ~= nil then redis.call('SET', P .. ':wm', string.format('%.0f', mark)) end

-- 4. trim what no event can read again; expire idle entities: an entity's keys are given
--    the TTL again once the log's has run down by half the margin (ttl - horizon); the
--    first batch of a group (no watermark before it) trims nothing but sets the TTLs
do
  local kinds = labelled and {'log', 'ev', 'lab', 'seq', 'memo'} or {'log', 'ev', 'seq', 'memo'}
  local fresh = ttl - (ttl - lateness - span) / 2
  for _, entity in ipairs(order) do
    local old = olds[entity]
    if #old > 0 then
      hdel(key(entity, 'ev'), old)
      hdel(key(entity, 'memo'), old)
      if labelled then hdel(key(entity, 'lab'), old) end
      redis.call('ZREMRANGEBYSCORE', key(entity, 'log'), '-inf', string.format('%.0f', horizon))
    end
    if redis.call('PTTL', key(entity, 'log')) < fresh then
      for _, kind in ipairs(kinds) do redis.call('PEXPIRE', key(entity, kind), ttl) end
    end
  end
  if labelled then
    local old = redis.call('ZRANGEBYSCORE', P .. ':dirz', '-inf', string.format('%.0f', horizon),
                          'LIMIT', 0, 10000)
    if #old > 0 then
      hdel(P .. ':dir', old)
      for i = 1, #old, 4000 do
        redis.call('ZREM', P .. ':dirz', unpack(old, i, math.min(i + 3999, #old)))
      end
    end
  end
end

local before = held_mark or ''
return {before, table.concat(codes, '\n'), entities, table.concat(counts, ','), all_ids,
        table.concat(all_times, ','), table.concat(all_rows, '\n'),
        table.concat(all_labs, '\n'), {applied, ignored, pended}}
"""


class RedisWindowStore:
    """Implements :class:`stream_infer.features.live.WindowStore`: each group's script call,
    pipelined in one round trip."""

    def __init__(self, client: Any) -> None:
        if isinstance(client, redis.cluster.RedisCluster):
            raise ConfigError(
                "window features need a single Redis, not a Redis Cluster: each batch's "
                "script reads the logs of many entities (many slots). Point redis.url at a "
                "single Redis (with replicas if you like) or remove the [windows.*] groups")
        self.client = client
        self._packs = codecs.lookup(client.get_encoder().encoding).name == "utf-8"
        self._sha = self._load()

    def _load(self) -> str:
        try:
            sha: str = self.client.script_load(SCRIPT)
        except _UNAVAILABLE as exc:
            raise FeatureStoreError(f"redis unavailable: {redact(str(exc))}") from exc
        return sha

    def exchange(self, requests: Sequence[GroupRequest]) -> Sequence[Any]:
        try:
            return self._run(requests)
        except redis.exceptions.NoScriptError:
            self._sha = self._load()  # the server restarted or flushed its scripts
            return self._run(requests)
        except _UNAVAILABLE as exc:
            raise FeatureStoreError(f"redis unavailable: {redact(str(exc))}") from exc

    def _run(self, requests: Sequence[GroupRequest]) -> Sequence[Any]:
        """The calls packed by :func:`pack_command` (redis-py would spend about 0.7 us per
        argument packing them, four arguments per event and group), sent on a pooled
        connection under the client's retry policy as a pipeline; the first refusal is
        raised once every reply has been read."""
        if not self._packs:
            pipe = self.client.pipeline(transaction=False)
            for req in requests:
                pipe.evalsha(self._sha, 0, *req.args)
            return list(pipe.execute())
        packed = b"".join(pack_command(["EVALSHA", self._sha, "0", *req.args])
                          for req in requests)
        pool, pinned = self.client.connection_pool, self.client.connection
        conn = pinned or pool.get_connection()
        try:
            replies: list[Any] = conn.retry.call_with_retry(
                lambda: _exchange(conn, packed, len(requests)), lambda _: conn.disconnect())
        finally:
            if pinned is None:
                pool.release(conn)
        refused = next((r for r in replies if isinstance(r, redis.exceptions.ResponseError)),
                       None)
        if refused is not None:
            raise refused
        return replies

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except _UNAVAILABLE:
            return False


def pack_command(args: Sequence[str]) -> bytes:
    """One command in the Redis protocol, UTF-8 arguments."""
    body = "".join([f"${len(arg)}\r\n{arg}\r\n" for arg in args])
    if body.isascii():
        return f"*{len(args)}\r\n{body}".encode()
    encoded = [arg.encode() for arg in args]
    return b"".join([b"*%d\r\n" % len(encoded),
                     *[b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in encoded]])


def _exchange(conn: Any, packed: bytes, count: int) -> list[Any]:
    """Send ``count`` packed commands; their replies, a refusal as its exception (every
    reply is read, so the connection stays in step)."""
    conn.send_packed_command([packed])
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(conn.read_response())
        except redis.exceptions.ResponseError as exc:
            replies.append(exc)
    return replies


def check_eviction(client: Any, *, production: bool) -> str:
    """The server's ``maxmemory-policy``; an error in production (a warning otherwise) when
    it may evict keys: evicted window state would silently serve wrong counts and rates."""
    policy = str(client.info("memory").get("maxmemory_policy", "noeviction"))
    if policy == "noeviction":
        return policy
    message = (f"Redis maxmemory-policy is {policy!r}: eviction would silently drop window "
               "state and serve wrong counts and rates. Set `maxmemory-policy noeviction` "
               "(redis.conf or CONFIG SET) and size maxmemory for the state "
               "(README: window features, memory per entity)")
    if production:
        raise ConfigError(message)
    log.warning("%s", message)
    return policy
