"""Window state in Redis: per batch one read and one write script call per window group,
each pipelined over the groups in one round trip.

The engine decides everything (``stream_infer.features.live``); Redis stores its state and
makes each batch's write land whole and only on the state it was computed from. Keys, for a
group's prefix ``P`` (``win3:terminal:1a2b3c4d``) and entity ``e``::

    P:{e}       STRING the entity's log: a version, the row count, the rows (float64: time,
                label stamp, values; the features served, float32 when that keeps them
                exactly) and the event ids (``features.codec``; LZ4-compressed from
                1 KiB); expires (``PX``) a horizon plus a margin after its last write
    P:dir       HASH   event_id -> entity (groups with a rate: to place a label, and to
                       find a kept id again under another entity)
    P:dirz      ZSET   event_id by event time (to trim the directory)
    P:pending   HASH   event_id -> "label_time,label" (labels waiting for their event)
    P:pending:order LIST the pending labels' arrival order (the bound drops the oldest)
    P:wm        the group's watermark: the newest event time written
    P:lock      the worker whose turn it is on the group (a token, with a lease)
    P:lock:s    the same on shard ``s`` of its entities (a group read in shards)

:data:`READ` takes the group's lease for the worker when it names one (or answers ``0``:
another worker's turn) and answers the watermark, the blobs of the batch's entities (when
told to; otherwise an ``MGET`` beside the script reads them, and the script is told the
entities only if it has labels to place) and of the entities its labels' and events' ids
belong to (by the directory: a label's event, an id kept before; an entity read beside may
be read again), the batch's ids the directory holds with their entities, and the pending
labels of the batch's labels and events.
:data:`WRITE` first checks that every blob read still has the version it was read at (one
``EXISTS`` for the blobs read absent), that no pending label or directory entry the batch
relied on has changed, that no new event's id has been kept meanwhile (its directory
entry is the one read), and that the watermark has not moved past an event the batch
computed (beyond its allowed lateness); then writes the blobs, the directory, the pending
labels and the watermark, and trims the directory to the horizon of the watermark before
the write, and gives the lease back. A write while another worker holds the lease is
refused too. A refused write changes nothing: the worker reads and computes the group
again.

A script touches the keys of many entities: many slots. Redis Cluster refuses that, so
window features need a single Redis (or a primary with replicas); the feature views may
still live on a cluster. Eviction would silently corrupt windows: :func:`check_eviction`
refuses a ``maxmemory-policy`` other than ``noeviction`` in the production profile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import hiredis
import redis
import redis.cluster
import redis.exceptions

from ..errors import ConfigError, FeatureStoreError, redact
from ..features.definition import Window
from ..features.live import BUSY, StoreCall
from .redis import _UNAVAILABLE, pack_mget, send_streamed

log = logging.getLogger(__name__)

_HELPERS = r"""
local function call_chunked(command, k, args)  -- one call per 4000 arguments (Lua's stack)
  local out = {}
  for i = 1, #args, 4000 do
    local last = math.min(i + 3999, #args)
    local part
    if k then
      part = redis.call(command, k, unpack(args, i, last))
    else
      part = redis.call(command, unpack(args, i, last))
    end
    if type(part) == 'table' then
      for j = 1, #part do out[#out + 1] = part[j] end
    end
  end
  return out
end

local function slice(from, count)
  local out = {}
  for i = 0, count - 1 do out[i + 1] = ARGV[from + i] end
  return out
end
"""

READ = _HELPERS + r"""
local P, token, lease = ARGV[1], ARGV[2], ARGV[3]
local lock = P .. ':lock' .. ARGV[4]
if token ~= '' and not redis.call('SET', lock, token, 'NX', 'PX', lease) then
  if redis.call('GET', lock) ~= token then return 0 end  -- another worker's turn
  redis.call('PEXPIRE', lock, lease)
end
local n = tonumber(ARGV[6])
local entities = {}  -- the batch's read beside: only the labels' beyond the batch's
if ARGV[5] ~= '' then entities = slice(7, n) end
local at = 7 + n
local m = tonumber(ARGV[at])
local label_ids = slice(at + 1, m)
at = at + 1 + m
local k = tonumber(ARGV[at])
local label_dir = {}
if m > 0 then
  local seen = {}
  for i = 7, 6 + n do seen[ARGV[i]] = true end
  local found = call_chunked('HMGET', P .. ':dir', label_ids)
  for i = 1, m do
    local e = found[i]
    label_dir[i] = e or ''
    if e and not seen[e] then
      seen[e] = true
      entities[#entities + 1] = e
    end
  end
end
local event_dir = {}  -- the batch's ids kept before, each with its entity
if k > 0 then
  local found = call_chunked('HMGET', P .. ':dir', slice(at + 1, k))
  local seen
  for i = 1, k do
    local e = found[i]
    if e then
      event_dir[#event_dir + 1] = ARGV[at + i]
      event_dir[#event_dir + 1] = e
      if not seen then
        seen = {}
        for j = 7, 6 + n do seen[ARGV[j]] = true end
        for _, named in ipairs(entities) do seen[named] = true end
      end
      if not seen[e] then
        seen[e] = true
        entities[#entities + 1] = e
      end
    end
  end
end
local pending_ids, pending_stamps = {}, {}
if m + k > 0 and redis.call('HLEN', P .. ':pending') > 0 then
  for i = 1, m do pending_ids[i] = label_ids[i] end
  for i = 1, k do pending_ids[m + i] = ARGV[at + i] end
  local stamps = call_chunked('HMGET', P .. ':pending', pending_ids)
  for i = 1, #pending_ids do pending_stamps[i] = stamps[i] or '' end
end
local keys = {}
for i, e in ipairs(entities) do keys[i] = P .. ':{' .. e .. '}' end
local blobs = {}
if #keys > 0 then blobs = call_chunked('MGET', nil, keys) end
for i = 1, #keys do blobs[i] = blobs[i] or '' end
return {redis.call('GET', P .. ':wm') or '', entities, blobs, label_ids, label_dir,
        pending_ids, pending_stamps, event_dir}
"""

WRITE = _HELPERS + r"""
local P, ttl, watermark, guard = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lateness, horizon, capacity = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local read_mark, token, lock = ARGV[8], ARGV[9], P .. ':lock' .. ARGV[10]
local n = tonumber(ARGV[11])
local entities_at = 12
local blobs_at = #ARGV - n + 1  -- the blobs come last
local at = entities_at + 2 * n
local nkept = tonumber(ARGV[at])
local kept_at = at + 1
at = kept_at + 5 * nkept
local ntaken = tonumber(ARGV[at])
local taken_at = at + 1
at = taken_at + ntaken
local nadded = tonumber(ARGV[at])
local added_at = at + 1

-- 1. the worker's turn (or nobody's: its lease ran out), and nothing it read has changed
local holder = redis.call('GET', lock)
if holder and holder ~= token then return 0 end
local held_mark = redis.call('GET', P .. ':wm')
local before = held_mark and tonumber(held_mark) or nil
if (held_mark or '') ~= read_mark and guard ~= '' and tonumber(guard) < before - lateness then
  return 0  -- the watermark moved past an event the batch computed
end
local keys, absent = {}, {}
for i = 0, n - 1 do
  local j = entities_at + 2 * i
  keys[i + 1] = P .. ':{' .. ARGV[j] .. '}'
  if ARGV[j + 1] == '' then
    absent[#absent + 1] = keys[i + 1]
  elseif redis.call('GETRANGE', keys[i + 1], 0, 7) ~= ARGV[j + 1] then
    return 0
  end
end
for i = 1, #absent, 4000 do  -- those read absent: one EXISTS per 4000
  if redis.call('EXISTS', unpack(absent, i, math.min(i + 3999, #absent))) > 0 then return 0 end
end
for i = 0, nadded - 1 do
  local j = added_at + 4 * i
  if (redis.call('HGET', P .. ':pending', ARGV[j]) or '') ~= ARGV[j + 2] then return 0 end
  if (redis.call('HGET', P .. ':dir', ARGV[j]) or '') ~= ARGV[j + 3] then return 0 end
end
if nkept > 0 and redis.call('HLEN', P .. ':pending') > 0 then
  for i = 0, nkept - 1 do
    local j = kept_at + 5 * i
    if (redis.call('HGET', P .. ':pending', ARGV[j]) or '') ~= ARGV[j + 3] then return 0 end
  end
end
if nkept > 0 then  -- no other worker has kept a new event's id meanwhile
  local ids = {}
  for i = 0, nkept - 1 do ids[i + 1] = ARGV[kept_at + 5 * i] end
  local found = call_chunked('HMGET', P .. ':dir', ids)
  for i = 0, nkept - 1 do
    if (found[i + 1] or '') ~= ARGV[kept_at + 5 * i + 4] then return 0 end
  end
end

-- 2. the batch's state
for i = 0, n - 1 do
  local key, blob = keys[i + 1], ARGV[blobs_at + i]
  if blob == '' then
    redis.call('DEL', key)
  elseif blob ~= '-' then
    redis.call('SET', key, blob, 'PX', ttl)
  end
end
if nkept > 0 then
  local dir, dirz = {}, {}
  for i = 0, nkept - 1 do
    local j = kept_at + 5 * i
    dir[#dir + 1] = ARGV[j]
    dir[#dir + 1] = ARGV[j + 1]
    dirz[#dirz + 1] = ARGV[j + 2]
    dirz[#dirz + 1] = ARGV[j]
  end
  call_chunked('HSET', P .. ':dir', dir)
  call_chunked('ZADD', P .. ':dirz', dirz)
end
if ntaken > 0 then call_chunked('HDEL', P .. ':pending', slice(taken_at, ntaken)) end
for i = 0, nadded - 1 do
  local j = added_at + 4 * i
  if ARGV[j + 2] == '' then redis.call('RPUSH', P .. ':pending:order', ARGV[j]) end
  redis.call('HSET', P .. ':pending', ARGV[j], ARGV[j + 1])
end
while nadded > 0 and redis.call('HLEN', P .. ':pending') > capacity do
  local oldest = redis.call('LPOP', P .. ':pending:order')
  if not oldest then break end
  redis.call('HDEL', P .. ':pending', oldest)
end
local mark = before
if watermark ~= '' and (mark == nil or tonumber(watermark) > mark) then
  mark = tonumber(watermark)
end
if mark then redis.call('SET', P .. ':wm', string.format('%.0f', mark)) end
if holder then redis.call('DEL', lock) end
if before then
  local old = redis.call('ZRANGEBYSCORE', P .. ':dirz', '-inf',
                         string.format('%.0f', before - horizon), 'LIMIT', 0, 10000)
  if #old > 0 then
    call_chunked('HDEL', P .. ':dir', old)
    call_chunked('ZREM', P .. ':dirz', old)
  end
end
return 1
"""


class RedisWindowStore:
    """Implements :class:`stream_infer.features.live.WindowStore`: each group's read or write
    script call, pipelined in one round trip."""

    def __init__(self, client: Any) -> None:
        if isinstance(client, redis.cluster.RedisCluster):
            raise ConfigError(
                "window features need a single Redis, not a Redis Cluster: each batch's "
                "scripts read and write the state of many entities (many slots). Point "
                "redis.url at a single Redis (with replicas if you like) or remove the "
                "[windows.*] groups")
        self.client = client
        self._shas = self._load()

    def _load(self) -> tuple[str, str]:
        with _reachable():
            return self.client.script_load(READ), self.client.script_load(WRITE)

    def read(self, calls: Sequence[StoreCall]) -> Sequence[Any]:
        return self._call(0, calls)

    def write(self, calls: Iterable[StoreCall]) -> Sequence[bool]:
        return [reply == 1 for reply in self._call(1, calls)]

    def _call(self, which: int, calls: Iterable[StoreCall]) -> list[Any]:
        taken: list[StoreCall] = []
        with _reachable():
            try:
                return self._run(which, calls, taken)
            except redis.exceptions.NoScriptError:
                self._shas = self._load()  # the server restarted or flushed its scripts
                return self._run(which, taken, [])

    def _run(self, which: int, calls: Iterable[StoreCall], taken: list[StoreCall]
             ) -> list[Any]:
        """The calls (each noted in ``taken`` as it comes) packed by :func:`pack_command`
        (hiredis packs in C what redis-py packs at about 1 us per argument: a few per event
        and entity), each followed by an ``MGET`` of its ``logs`` if it names any, sent one
        by one as they come by :func:`~stream_infer.adapters.redis.send_streamed`; the first
        refusal is raised once every reply has been read. The logs are read beside the
        script, not by it, so that they reach the socket without passing through Lua: the
        write checks each one's version anyway, so reading them a moment after the script
        is as safe."""
        sha = self._shas[which]

        def packets() -> Iterator[tuple[bytes, int]]:
            for call in calls:
                taken.append(call)
                packed = pack_command(["EVALSHA", sha, "0", *call.args], call.blobs)
                if not call.logs:
                    yield packed, 1
                    continue
                prefix = call.window.prefix
                yield packed + pack_mget([f"{prefix}:{{{e}}}" for e in call.logs]), 2

        replies = send_streamed(self.client, packets())
        refused = next((r for r in replies if isinstance(r, redis.exceptions.ResponseError)),
                       None)
        if refused is not None:
            raise refused
        answers = iter(replies)
        return [self._with_logs(call, answers) for call in taken]

    @staticmethod
    def _with_logs(call: StoreCall, answers: Iterator[Any]) -> Any:
        """The call's reply (the next of ``answers``), with the logs read beside it (the
        next after it) put first among the reply's entities and blobs."""
        reply = next(answers)
        if not call.logs:
            return reply
        blobs = [blob or b"" for blob in next(answers)]
        if reply == BUSY:
            return reply
        return [reply[0], [*call.logs, *reply[1]], [*blobs, *reply[2]], *reply[3:]]

    def directory(self, window: Window, event_ids: Sequence[str]) -> Sequence[str | None]:
        with _reachable():
            found = self.client.hmget(f"{window.prefix}:dir", list(event_ids))
        return [None if e is None else e.decode() if isinstance(e, bytes) else str(e)
                for e in found]

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except _UNAVAILABLE:
            return False


@contextmanager
def _reachable() -> Iterator[None]:
    """Redis unreachable (refused, timed out, reset) raised as ``FeatureStoreError``."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise FeatureStoreError(f"redis unavailable: {redact(str(exc))}") from exc


def pack_command(args: Sequence[str | int | bytes], blobs: Sequence[bytes] = ()) -> bytes:
    """One command in the Redis protocol: ``args`` (text as UTF-8, numbers as their digits,
    bytes as they are), then ``blobs``. hiredis packs ``args`` in C, several times faster
    than Python per argument, but copies bytes at about 0.5 GB/s; ``blobs`` (the logs, KBs
    each) are joined by Python, at memory speed."""
    command: Any = tuple(args)  # hiredis's stub declares a one-element tuple
    packed: bytes = hiredis.pack_command(command)
    if not blobs:
        return packed
    parts: list[bytes | memoryview] = [b"*%d\r\n" % (len(args) + len(blobs)),
                                       memoryview(packed)[packed.index(b"\n") + 1:]]
    for blob in blobs:
        parts += (b"$%d\r\n" % len(blob), blob, b"\r\n")
    return b"".join(parts)


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
