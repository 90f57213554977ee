"""Redis's CPU per entity for the shapes a window write can take, on an embedded redis-server.

The live window path keeps one key per entity (its log), so each batch's write script checks
and rewrites one key per entity it touched. This measures what that costs Redis per entity,
whatever the worker does: scripts that take ``--entities`` entities per call (names of a
window group's key form, blobs of ``--bytes``), over a key space of ``--keyspace`` entities
that every call walks on from the last (so most keys exist, as in a running service), in
``--turns`` alternating turns, each shape on a flushed server:

- ``args``: the script only builds each entity's key from its name (what every shape pays
  for its arguments);
- ``check``: and reads each key's version (``GETRANGE key 0 7``), as the write's check does;
- ``set``: and writes each blob with a TTL (``SET key blob PX ttl``), no check;
- ``check_set``: both, the write script's shape per entity;
- ``native_set``: no script: the same ``SET key blob PX ttl`` per entity sent as plain
  commands, pipelined in one round trip (what the write would cost Redis if it did not
  have to be one atomic, conditional script);
- ``hash_set``: many entities per key instead: every blob one field of a group-wide hash,
  one ``HSET`` per 2,000 fields;
- ``hash_check_set``: and the versions in a second hash, read by one ``HMGET`` (the check)
  and written by one ``HSET``.

Redis's CPU is read from ``INFO cpu`` around each call (the INFO calls' own cost is in the
figure, about 0.01 µs per entity at 2,000 entities a call). The figures are µs per entity, the
median of the turns and every turn's::

    python bench/redis_calls.py --json
    python bench/redis_calls.py --bytes 1500 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
from typing import Any

import redis

from stream_infer.demo.embedded import EmbeddedRedis

PREFIX = "win3:customer:1a2b3c4d"
SHAPES: dict[str, str | None] = {
    "args": "",
    "check": "  local v = redis.call('GETRANGE', key, 0, 7)\n",
    "set": "  redis.call('SET', key, ARGV[at + i], 'PX', 1000000)\n",
    "check_set": ("  local v = redis.call('GETRANGE', key, 0, 7)\n"
                  "  redis.call('SET', key, ARGV[at + i], 'PX', 1000000)\n"),
    "native_set": None,
}
FIELDS = ("local names, logs, versions = {}, {}, {}\n"
          "for i = 0, n - 1 do\n"
          "  local name = ARGV[3 + 2 * i]\n"
          "  names[i + 1] = name\n"
          "  logs[2 * i + 1], logs[2 * i + 2] = name, ARGV[at + i]\n"
          "  versions[2 * i + 1], versions[2 * i + 2] = name, ARGV[4 + 2 * i]\n"
          "end\n")
HASH_SHAPES = {
    "hash_set": FIELDS + "redis.call('HSET', P .. ':logs', unpack(logs))\n",
    "hash_check_set": FIELDS + ("redis.call('HMGET', P .. ':ver', unpack(names))\n"
                                "redis.call('HSET', P .. ':logs', unpack(logs))\n"
                                "redis.call('HSET', P .. ':ver', unpack(versions))\n"),
}
"""Shapes whose script takes the batch's entities whole, not one at a time: the body
runs once, after ``FIELDS`` gathered the names, the (name, blob) and (name, version)
pairs (2,000 entities: 4,000 arguments, within what ``unpack`` takes)."""


def whole_script(body: str) -> str:
    """A script over ``n`` entities at once, ARGV as :func:`script`'s."""
    return f"local n, P = tonumber(ARGV[1]), ARGV[2]\nlocal at = 3 + 2 * n\n{body}return 1\n"


def script(body: str) -> str:
    """A script over ``n`` entities: ARGV is n, the prefix, n (name, version) pairs, then n
    blobs; ``body`` runs per entity with its ``key``."""
    return ("local n, P = tonumber(ARGV[1]), ARGV[2]\n"
            "local at = 3 + 2 * n\n"
            "for i = 0, n - 1 do\n"
            "  local key = P .. ':{' .. ARGV[3 + 2 * i] .. '}'\n"
            f"{body}"
            "end\n"
            "return 1\n")


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def per_entity(client: Any, source: str | None, *, entities: int, size: int, keyspace: int,
               calls: int) -> float:
    """Redis CPU µs per entity of ``calls`` calls of the shape's script (None: ``SET …
    PX`` per entity, pipelined, no script), on a flushed server."""
    client.flushall()
    run = client.register_script(source) if source is not None else None
    blob = os.urandom(size)
    spent = 0.0
    for call in range(calls):
        names = [f"cu{(call * entities + i) % keyspace}" for i in range(entities)]
        if run is None:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.set(f"{PREFIX}:{{{name}}}", blob, px=1_000_000)
            before = redis_cpu(client)
            pipe.execute()
        else:
            args: list[Any] = [entities, PREFIX]
            for name in names:
                args += [name, struct.pack("<Q", call)]
            before = redis_cpu(client)
            run(args=[*args, *([blob] * entities)])
        spent += redis_cpu(client) - before
    return spent / (calls * entities) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=2000, help="entities per call")
    parser.add_argument("--bytes", type=int, default=150, help="bytes per blob")
    parser.add_argument("--keyspace", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=50, help="calls per shape and turn")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = {**{name: None if body is None else script(body)
                  for name, body in SHAPES.items()},
               **{name: whole_script(body) for name, body in HASH_SHAPES.items()}}
    figures: dict[str, list[float]] = {name: [] for name in sources}
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        version = client.info("server")["redis_version"]
        for _ in range(args.turns):
            for name, source in sources.items():
                figures[name].append(round(per_entity(
                    client, source, entities=args.entities, size=args.bytes,
                    keyspace=args.keyspace, calls=args.calls), 2))
    result = {
        "machine": f"{os.cpu_count()} cores {platform.machine()} redis {version}",
        "entities_per_call": args.entities, "bytes": args.bytes, "keyspace": args.keyspace,
        "redis_cpu_us_per_entity": {name: {"median": statistics.median(values),
                                           "turns": values}
                                    for name, values in figures.items()}}
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result["redis_cpu_us_per_entity"].items():
            print(f"{name:14} {value['median']:6.2f} µs per entity  {value['turns']}")


if __name__ == "__main__":
    main()
