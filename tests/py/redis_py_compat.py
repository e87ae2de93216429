"""redis-py compatibility workload for turnout (driven by tests/compat_redis_py.rs).

Runs the same deterministic workload against one address and prints every result as one
canonical JSON document on stdout. The Rust test runs it against a plain redis-server and
against turnout in front of two servers, then requires both documents to be identical.

Only commands whose results do not depend on which server holds which keys are used: no
DBSIZE, KEYS, SCAN, RANDOMKEY, INFO or CLIENT ID; multi-key commands span namespaces only
where turnout splits them (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH); transactions stay in one
namespace.

Pub/Sub is covered in RESP2 and RESP3 (redis-py `protocol=3`): SUBSCRIBE, PSUBSCRIBE and
SSUBSCRIBE confirmations, PUBLISH/SPUBLISH receiver counts from a second client, messages in
publication order (a channel message before the pattern message for the same publication, as
Redis delivers them), PING and a refused command in RESP2 subscribed mode, UNSUBSCRIBE,
PUNSUBSCRIBE and SUNSUBSCRIBE, PUBSUB CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/SHARDNUMSUB, a RESP3
subscriber receiving messages while a BLPOP blocks on another connection, and one RESP3
connection on which pushes and ordinary replies (from both backends) interleave. Channel names
carry namespace prefixes on purpose: channels are not keys and must not be routed as keys.
Every wait is bounded; only what Redis makes deterministic is recorded (UNSUBSCRIBE without
arguments answers in Redis's hash order, so those confirmations are recorded sorted; pushes and
replies of one RESP3 connection are recorded as two sequences, not as one interleaving).

Usage: redis_py_compat.py HOST PORT SEED
"""

import base64
import json
import random
import sys
import threading
import time
import traceback

import redis

NAMESPACES = ["web:", "tok:", "session:", "impact:", "other:"]


def canon(value):
    """A JSON-able, order-independent rendering of a redis-py result."""
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "message": str(value)}
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"bytes_b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {
            "dict": sorted(
                ([canon(k), canon(v)] for k, v in value.items()),
                key=lambda kv: json.dumps(kv, sort_keys=True),
            )
        }
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((canon(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, float):
        return {"float": repr(value)}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return {"other": type(value).__name__, "repr": repr(value)}


def attempt(fn):
    """fn()'s result, or the Redis error it raised (compared like any other result)."""
    try:
        return canon(fn())
    except redis.exceptions.ResponseError as e:
        return canon(e)


def client(host, port, **kwargs):
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=10,
        socket_connect_timeout=5,
        **kwargs,
    )


def plain_commands(r):
    out = []
    a = out.append
    a(attempt(lambda: r.ping()))
    a(attempt(lambda: r.echo("hello turnout")))
    a(attempt(lambda: r.set("web:plain", "v1")))
    a(attempt(lambda: r.get("web:plain")))
    a(attempt(lambda: r.append("web:plain", "-more")))
    a(attempt(lambda: r.getrange("web:plain", 1, 4)))
    a(attempt(lambda: r.strlen("web:plain")))
    a(attempt(lambda: r.setnx("web:plain", "ignored")))
    a(attempt(lambda: r.set("tok:ttl", "x", ex=1000)))
    a(attempt(lambda: 0 < r.ttl("tok:ttl") <= 1000))
    a(attempt(lambda: r.persist("tok:ttl")))
    a(attempt(lambda: r.ttl("tok:ttl")))
    a(attempt(lambda: r.set("session:nx", "1", nx=True)))
    a(attempt(lambda: r.set("session:nx", "2", nx=True)))
    a(attempt(lambda: r.getset("session:nx", "3")))
    a(attempt(lambda: r.getdel("session:nx")))
    a(attempt(lambda: r.get("session:nx")))
    a(attempt(lambda: r.incr("impact:counter")))
    a(attempt(lambda: r.incrby("impact:counter", 41)))
    a(attempt(lambda: r.decrby("impact:counter", 2)))
    a(attempt(lambda: r.incrbyfloat("impact:float", 1.5)))
    a(attempt(lambda: r.set("other:bin", b"\x00\xff\r\n$-1\r\n*1\r\n")))
    a(attempt(lambda: r.get("other:bin")))
    a(attempt(lambda: r.hset("tok:hash", mapping={"f1": "a", "f2": "b", "n": 1})))
    a(attempt(lambda: r.hgetall("tok:hash")))
    a(attempt(lambda: r.hget("tok:hash", "f2")))
    a(attempt(lambda: r.hincrby("tok:hash", "n", 10)))
    a(attempt(lambda: r.hmget("tok:hash", ["f1", "missing", "n"])))
    a(attempt(lambda: sorted(r.hkeys("tok:hash"))))
    a(attempt(lambda: r.hdel("tok:hash", "f1", "missing")))
    a(attempt(lambda: r.rpush("web:list", "a", "b", "c", "d")))
    a(attempt(lambda: r.lpush("web:list", "z")))
    a(attempt(lambda: r.lrange("web:list", 0, -1)))
    a(attempt(lambda: r.lpop("web:list")))
    a(attempt(lambda: r.rpop("web:list", 2)))
    a(attempt(lambda: r.llen("web:list")))
    a(attempt(lambda: r.lmove("web:list", "web:list2", "LEFT", "RIGHT")))
    a(attempt(lambda: r.sadd("session:set", "x", "y", "z", "x")))
    a(attempt(lambda: r.smembers("session:set")))
    a(attempt(lambda: r.sismember("session:set", "y")))
    a(attempt(lambda: r.srem("session:set", "y")))
    a(attempt(lambda: r.scard("session:set")))
    a(attempt(lambda: r.zadd("impact:zset", {"a": 1, "b": 2.5, "c": -3})))
    a(attempt(lambda: r.zrange("impact:zset", 0, -1, withscores=True)))
    a(attempt(lambda: r.zscore("impact:zset", "b")))
    a(attempt(lambda: r.zincrby("impact:zset", 0.25, "a")))
    a(attempt(lambda: r.zrangebyscore("impact:zset", 0, "+inf")))
    a(attempt(lambda: r.zrank("impact:zset", "c")))
    a(attempt(lambda: r.xadd("tok:stream", {"k": "v"}, id="1-1")))
    a(attempt(lambda: r.xadd("tok:stream", {"k2": "v2"}, id="1-2")))
    a(attempt(lambda: r.xrange("tok:stream")))
    a(attempt(lambda: r.xlen("tok:stream")))
    a(attempt(lambda: r.type("web:plain")))
    a(attempt(lambda: r.type("tok:hash")))
    a(attempt(lambda: r.type("impact:zset")))
    a(attempt(lambda: r.type("nowhere:none")))
    a(attempt(lambda: r.expire("web:list2", 1000)))
    a(attempt(lambda: r.rename("web:list2", "web:list3")))
    a(attempt(lambda: r.lrange("web:list3", 0, -1)))
    a(attempt(lambda: r.copy("tok:hash", "session:hash-copy")))
    a(attempt(lambda: r.hgetall("session:hash-copy")))
    a(attempt(lambda: r.eval("return {KEYS[1], ARGV[1], redis.call('GET', KEYS[1])}", 1, "web:plain", "arg")))
    a(attempt(lambda: r.eval("return 1 + 1", 0)))
    sha = r.script_load("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    a(attempt(lambda: r.evalsha(sha, 1, "impact:counter", 5)))
    # Errors come back with Redis's own messages.
    a(attempt(lambda: r.incr("web:plain")))
    a(attempt(lambda: r.lpush("web:plain", "x")))
    a(attempt(lambda: r.execute_command("NOSUCHCOMMAND", "x")))
    a(attempt(lambda: r.execute_command("GET")))
    a(attempt(lambda: r.execute_command("SET", "web:x")))
    return out


def seeded_reads(r, seed_keys):
    out = []
    for key in seed_keys["strings"]:
        out.append(attempt(lambda key=key: r.get(key)))
    for key in seed_keys["hashes"]:
        out.append(attempt(lambda key=key: r.hgetall(key)))
    for key in seed_keys["lists"]:
        out.append(attempt(lambda key=key: r.lrange(key, 0, -1)))
    return out


def random_key(rng, kind):
    return "%s%s:%d" % (rng.choice(NAMESPACES), kind, rng.randrange(12))


def plain_pipeline(r, rng, size):
    pipe = r.pipeline(transaction=False)
    for i in range(size):
        op = rng.randrange(16)
        if op == 0:
            pipe.set(random_key(rng, "s"), "v%d" % i)
        elif op == 1:
            pipe.get(random_key(rng, "s"))
        elif op == 2:
            pipe.incr(random_key(rng, "n"))
        elif op == 3:
            pipe.hset(random_key(rng, "h"), "f%d" % rng.randrange(5), i)
        elif op == 4:
            pipe.hgetall(random_key(rng, "h"))
        elif op == 5:
            pipe.rpush(random_key(rng, "l"), i, i + 1)
        elif op == 6:
            pipe.lrange(random_key(rng, "l"), 0, 5)
        elif op == 7:
            pipe.sadd(random_key(rng, "set"), "m%d" % rng.randrange(8))
        elif op == 8:
            pipe.smembers(random_key(rng, "set"))
        elif op == 9:
            pipe.zadd(random_key(rng, "z"), {"m%d" % rng.randrange(8): i})
        elif op == 10:
            pipe.zrange(random_key(rng, "z"), 0, -1, withscores=True)
        elif op == 11:
            pipe.mget([random_key(rng, "s") for _ in range(rng.randrange(1, 6))])
        elif op == 12:
            pipe.exists(*[random_key(rng, "s") for _ in range(rng.randrange(1, 5))])
        elif op == 13:
            pipe.delete(*[random_key(rng, "n") for _ in range(rng.randrange(1, 4))])
        elif op == 14:
            pipe.mset({random_key(rng, "s"): "m%d" % i for _ in range(rng.randrange(1, 5))})
        elif rng.randrange(2):
            # "not an integer" when the string key holds a word by now.
            pipe.incr(random_key(rng, "s"))
        else:
            # WRONGTYPE when the key is a hash by now.
            pipe.lpush(random_key(rng, "h"), i)
    return [canon(v) for v in pipe.execute(raise_on_error=False)]


def transactions(r):
    out = []
    pipe = r.pipeline(transaction=True)
    pipe.incr("tok:tx:n")
    pipe.set("tok:tx:s", "one")
    pipe.append("tok:tx:s", "+two")
    pipe.get("tok:tx:s")
    pipe.hset("session:tx:h", mapping={"a": 1, "b": 2})
    pipe.hgetall("session:tx:h")
    pipe.rpush("tok:tx:l", "x", "y")
    pipe.lrange("tok:tx:l", 0, -1)
    pipe.ping()
    out.append([canon(v) for v in pipe.execute()])
    # An error at EXEC time fails that command only.
    pipe = r.pipeline(transaction=True)
    pipe.set("web:tx:s", "text")
    pipe.incr("web:tx:s")
    pipe.get("web:tx:s")
    out.append([canon(v) for v in pipe.execute(raise_on_error=False)])
    # An empty transaction.
    out.append(canon(r.pipeline(transaction=True).execute()))
    # One in the default route's namespace.
    pipe = r.pipeline(transaction=True)
    pipe.set("other:tx", "d")
    pipe.get("other:tx")
    out.append([canon(v) for v in pipe.execute()])
    return out


def watch_transactions(r, r2):
    out = []
    # WATCH, read, MULTI, write, EXEC: succeeds when nobody touched the key.
    with r.pipeline() as pipe:
        pipe.watch("session:w")
        current = pipe.get("session:w")
        pipe.multi()
        pipe.set("session:w", int(current or 0) + 1)
        pipe.get("session:w")
        out.append(canon(pipe.execute()))
    # Another client changes the watched key: EXEC fails with WatchError.
    with r.pipeline() as pipe:
        pipe.watch("session:w")
        current = pipe.get("session:w")
        r2.set("session:w", "changed elsewhere")
        pipe.multi()
        pipe.set("session:w", int(current or 0) + 1)
        try:
            out.append(canon(pipe.execute()))
        except redis.WatchError as e:
            out.append(canon(e))
    out.append(canon(r.get("session:w")))

    # The transaction helper retries on conflicts; the first attempt sees a conflict.
    attempts = []

    def bump(pipe):
        value = int(pipe.get("tok:txn") or 0)
        attempts.append(value)
        if len(attempts) == 1:
            r2.incrby("tok:txn", 100)
        pipe.multi()
        pipe.set("tok:txn", value + 1)

    out.append(canon(r.transaction(bump, "tok:txn")))
    out.append(canon(attempts))
    out.append(canon(r.get("tok:txn")))
    # UNWATCH and DISCARD.
    with r.pipeline() as pipe:
        pipe.watch("impact:w")
        pipe.unwatch()
        pipe.multi()
        pipe.set("impact:w", "x")
        pipe.reset()
    out.append(canon(r.exists("impact:w")))
    return out


def multi_key(r):
    out = []
    keys = ["web:mk", "tok:mk", "session:mk", "impact:mk", "other:mk"]
    out.append(attempt(lambda: r.mset({k: "value of " + k for k in keys})))
    out.append(attempt(lambda: r.mget(list(reversed(keys)) + ["web:none", "tok:none"])))
    out.append(attempt(lambda: r.mget("tok:mk", "web:mk", "tok:mk")))
    out.append(attempt(lambda: r.exists(*keys, "web:none", "web:mk")))
    out.append(attempt(lambda: r.touch(*keys, "impact:none")))
    out.append(attempt(lambda: r.msetnx({"web:mk-nx": "1", "web:mk-nx2": "2"})))
    out.append(attempt(lambda: r.unlink("web:mk", "tok:mk")))
    out.append(attempt(lambda: r.delete(*keys, "web:mk-nx", "web:mk-nx2")))
    out.append(attempt(lambda: r.mget(keys)))
    return out


def resp3(host, port):
    r3 = client(host, port, protocol=3)
    out = []
    a = out.append
    a(attempt(lambda: r3.ping()))
    a(attempt(lambda: r3.hset("tok:r3:h", mapping={"a": "1", "b": "2", "c": "3"})))
    a(attempt(lambda: r3.hgetall("tok:r3:h")))
    a(attempt(lambda: type(r3.hgetall("tok:r3:h")).__name__))
    a(attempt(lambda: r3.hgetall("tok:r3:missing")))
    a(attempt(lambda: r3.sadd("web:r3:s", "p", "q")))
    a(attempt(lambda: r3.smembers("web:r3:s")))
    a(attempt(lambda: type(r3.smembers("web:r3:s")).__name__))
    a(attempt(lambda: r3.zadd("impact:r3:z", {"x": 1.5, "y": 2})))
    a(attempt(lambda: r3.zrange("impact:r3:z", 0, -1, withscores=True)))
    a(attempt(lambda: r3.zscore("impact:r3:z", "x")))
    a(attempt(lambda: r3.zincrby("impact:r3:z", 1, "y")))
    a(attempt(lambda: r3.get("web:r3:missing")))
    a(attempt(lambda: r3.set("session:r3", "v")))
    a(attempt(lambda: r3.getex("session:r3")))
    a(attempt(lambda: r3.incrbyfloat("session:r3:f", 2.5)))
    a(attempt(lambda: r3.xadd("other:r3:x", {"f": "v"}, id="5-5")))
    a(attempt(lambda: r3.xrange("other:r3:x")))
    a(attempt(lambda: r3.mget("tok:r3:h", "session:r3", "web:r3:missing")))
    a(attempt(lambda: r3.eval("return {1, 'two', {3, 'four'}}", 0)))
    a(attempt(lambda: r3.eval("redis.setresp(3); return {map={k='v'}}", 0)))
    a(attempt(lambda: r3.eval("redis.setresp(3); return {double=1.25}", 0)))
    a(attempt(lambda: r3.hgetall("web:plain")))
    pipe = r3.pipeline(transaction=False)
    pipe.hgetall("tok:r3:h")
    pipe.smembers("web:r3:s")
    pipe.zrange("impact:r3:z", 0, -1, withscores=True)
    pipe.get("session:r3")
    a(canon(pipe.execute()))
    pipe = r3.pipeline(transaction=True)
    pipe.hset("tok:r3:h", "d", "4")
    pipe.hgetall("tok:r3:h")
    a(canon(pipe.execute()))
    a(attempt(lambda: r3.client_setname("compat-resp3")))
    a(attempt(lambda: r3.client_getname()))
    r3.close()
    return out


def client_names(host, port, r):
    out = []
    a = out.append
    a(attempt(lambda: r.client_getname()))
    a(attempt(lambda: r.client_setname("compat-app")))
    a(attempt(lambda: r.client_getname()))
    # The name sticks while the connection reaches both backends.
    a(attempt(lambda: r.set("web:named", "1")))
    a(attempt(lambda: r.set("tok:named", "1")))
    a(attempt(lambda: r.client_getname()))
    a(attempt(lambda: r.client_setname("compat-renamed")))
    a(attempt(lambda: r.client_getname()))
    a(attempt(lambda: r.client_setname("bad name")))
    a(attempt(lambda: r.client_getname()))
    named = client(host, port, client_name="from-constructor")
    a(attempt(lambda: named.client_getname()))
    a(attempt(lambda: named.get("session:named")))
    a(attempt(lambda: named.client_getname()))
    named.close()
    return out


# Bound on waiting for one Pub/Sub message; a missing message is recorded as None. Once one
# went missing, later waits are shorter, so a run that loses many still ends in bounded time.
MESSAGE_WAIT = 3.0
AFTER_MISS_WAIT = 0.5
# How long "no further message" is checked for.
QUIET_WAIT = 0.3
missed = []


def next_message(p, timeout=None):
    """The next Pub/Sub message of `p` as [type, pattern, channel, data], or None."""
    if timeout is None:
        timeout = AFTER_MISS_WAIT if missed else MESSAGE_WAIT
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if timeout != QUIET_WAIT:
                missed.append(p)
            return None
        m = p.get_message(timeout=left)
        if m is not None:
            return [m["type"], m["pattern"], m["channel"], m["data"]]


def next_messages(p, n):
    return [attempt(lambda: next_message(p)) for _ in range(n)]


def quiet(p):
    """True when no further message arrives within QUIET_WAIT."""
    return attempt(lambda: next_message(p, QUIET_WAIT) is None)


def unsubscribe_all(p, how, n):
    """Confirmations of an argument-less (P|S)UNSUBSCRIBE: Redis answers in its dict's hash
    order, which changes with every server process, so the channels are sorted; the counts
    still come down one by one."""
    how()
    got = [next_message(p) for _ in range(n)]
    if any(g is None for g in got):
        return canon({"missing": got})
    return canon([sorted(g[0] for g in got), sorted(g[2] for g in got), [g[3] for g in got]])


def pubsub_resp2(host, port):
    out = []
    a = out.append
    sub = client(host, port)
    pub = client(host, port, single_connection_client=True)
    p = sub.pubsub()
    other = client(host, port).pubsub()
    a(attempt(lambda: pub.pubsub_numsub("web:ps:ch1", "tok:ps:ch2")))
    a(attempt(lambda: pub.publish("web:ps:ch1", "before anyone listens")))
    p.subscribe("web:ps:ch1", "tok:ps:ch2")
    a(next_messages(p, 2))
    p.psubscribe("ps:news.*")
    a(next_messages(p, 1))
    p.subscribe("ps:news.local")
    a(next_messages(p, 1))
    other.subscribe("web:ps:ch1")
    a(next_messages(other, 1))
    # Introspection (keyless: turnout sends it to the default route, the Pub/Sub endpoint here).
    a(attempt(lambda: sorted(pub.pubsub_channels("*ps:*"))))
    a(attempt(lambda: pub.pubsub_numsub("web:ps:ch1", "tok:ps:ch2", "ps:news.local", "ps:none")))
    a(attempt(lambda: pub.pubsub_numpat()))
    # Receiver counts, then the messages in publication order.
    a(attempt(lambda: pub.publish("web:ps:ch1", "hello")))
    a(attempt(lambda: pub.publish("ps:news.sport", "goal")))
    a(attempt(lambda: pub.publish("ps:nobody", "lost")))
    a(attempt(lambda: pub.publish("tok:ps:ch2", b"\x00\xff\r\n*1\r\n$-1\r\n")))
    a(attempt(lambda: pub.publish("ps:news.local", "both")))
    a(attempt(lambda: pub.publish("web:ps:ch1", "x" * 100000)))
    a(next_messages(p, 6))
    a(quiet(p))
    a(next_messages(other, 2))
    a(quiet(other))
    # A publisher pipeline.
    pipe = pub.pipeline(transaction=False)
    for i in range(20):
        pipe.publish(["web:ps:ch1", "tok:ps:ch2", "ps:news.%d" % i][i % 3], "burst %d" % i)
    a(attempt(lambda: pipe.execute()))
    a(next_messages(p, 20))
    a(quiet(p))
    a(next_messages(other, 7))
    # PING and a refused command in RESP2 subscribed mode.
    p.ping()
    a(next_messages(p, 1))
    p.ping("are you there")
    a(next_messages(p, 1))
    p.execute_command("GET", "web:plain")
    a(attempt(lambda: next_message(p)))
    p.execute_command("SET", "tok:ps:nope", "1")
    a(attempt(lambda: next_message(p)))
    a(attempt(lambda: pub.exists("tok:ps:nope")))
    # Still subscribed after the refusals.
    a(attempt(lambda: pub.publish("tok:ps:ch2", "after errors")))
    a(next_messages(p, 1))
    # Unsubscribing, one by one and all at once.
    p.unsubscribe("web:ps:ch1")
    a(next_messages(p, 1))
    a(attempt(lambda: pub.publish("web:ps:ch1", "only other")))
    a(quiet(p))
    a(next_messages(other, 1))
    p.punsubscribe("ps:news.*")
    a(next_messages(p, 1))
    a(attempt(lambda: pub.pubsub_numpat()))
    a(attempt(lambda: pub.publish("ps:news.sport", "nobody")))
    p.unsubscribe("ps:never-subscribed")
    a(next_messages(p, 1))
    a(unsubscribe_all(p, p.unsubscribe, 2))
    a(attempt(lambda: p.subscribed))
    a(attempt(lambda: pub.publish("tok:ps:ch2", "gone")))
    a(attempt(lambda: pub.pubsub_numsub("web:ps:ch1", "tok:ps:ch2", "ps:news.local")))
    # The same PubSub object subscribes again on its connection.
    p.psubscribe("ps:a.*", "ps:b.*")
    a(next_messages(p, 2))
    a(attempt(lambda: pub.publish("ps:b.1", "again")))
    a(next_messages(p, 1))
    a(unsubscribe_all(p, p.punsubscribe, 2))
    a(attempt(lambda: pub.pubsub_numpat()))
    # Sharded channels (SSUBSCRIBE/SPUBLISH: a standalone Redis 7 takes them too).
    p.ssubscribe("tok:ps:shard", "web:ps:shard")
    a([attempt(lambda: next_message(p)) for _ in range(2)])
    a(attempt(lambda: sorted(pub.pubsub_shardchannels("*ps:*"))))
    a(attempt(lambda: pub.pubsub_shardnumsub("tok:ps:shard", "web:ps:shard", "ps:none")))
    a(attempt(lambda: pub.spublish("tok:ps:shard", "s1")))
    a(attempt(lambda: pub.spublish("web:ps:shard", "s2")))
    a(attempt(lambda: pub.spublish("ps:none", "s3")))
    a(attempt(lambda: pub.publish("tok:ps:shard", "not sharded")))
    a([attempt(lambda: next_message(p)) for _ in range(2)])
    a(attempt(lambda: p.get_sharded_message(timeout=QUIET_WAIT) is None))
    p.sunsubscribe("tok:ps:shard")
    a(next_messages(p, 1))
    a(attempt(lambda: pub.spublish("tok:ps:shard", "after")))
    a(unsubscribe_all(p, p.sunsubscribe, 1))
    a(attempt(lambda: pub.pubsub_shardnumsub("tok:ps:shard", "web:ps:shard")))
    other.unsubscribe()
    a(next_messages(other, 1))
    p.close()
    other.close()
    # Ordinary commands on the clients afterwards.
    a(attempt(lambda: sub.set("web:ps:after", "1")))
    a(attempt(lambda: sub.get("web:ps:after")))
    a(attempt(lambda: pub.get("web:ps:after")))
    sub.close()
    pub.close()
    return out


def pubsub_resp3(host, port):
    out = []
    a = out.append
    r3 = client(host, port, protocol=3)
    pub = client(host, port, protocol=3, single_connection_client=True)
    blocker = client(host, port, protocol=3, single_connection_client=True)
    # A push handler of our own keeps redis-py from logging every push.
    p = r3.pubsub(push_handler_func=lambda push: push)
    p.subscribe("web:ps3:ch")
    a(next_messages(p, 1))
    p.psubscribe("ps3:*")
    a(next_messages(p, 1))
    p.ssubscribe("tok:ps3:shard")
    a(next_messages(p, 1))
    a(attempt(lambda: pub.pubsub_numsub("web:ps3:ch")))
    a(attempt(lambda: pub.pubsub_numpat()))
    a(attempt(lambda: pub.pubsub_shardnumsub("tok:ps3:shard")))
    # In RESP3 PING is an ordinary reply, subscribed or not.
    p.ping()
    a(next_messages(p, 1))
    # Messages arrive while a BLPOP blocks on another connection, and ordinary commands run on
    # the client's other pooled connections meanwhile.
    popped = []
    thread = threading.Thread(
        target=lambda: popped.append(attempt(lambda: blocker.blpop(["web:ps3:queue"], timeout=10)))
    )
    thread.start()
    time.sleep(0.1)  # let the BLPOP block (the results do not depend on it)
    a(attempt(lambda: pub.publish("web:ps3:ch", "m1")))
    a(attempt(lambda: r3.hset("tok:ps3:h", mapping={"a": "1"})))
    a(attempt(lambda: pub.publish("ps3:x", "m2")))
    a(attempt(lambda: pub.spublish("tok:ps3:shard", "m3")))
    a(attempt(lambda: r3.hgetall("tok:ps3:h")))
    a(attempt(lambda: pub.publish("web:ps3:ch", b"\x00\xff binary")))
    a(next_messages(p, 4))
    a(attempt(lambda: r3.zadd("impact:ps3:z", {"m": 1.5})))
    a(attempt(lambda: r3.zrange("impact:ps3:z", 0, -1, withscores=True)))
    a(attempt(lambda: pub.rpush("web:ps3:queue", "job")))
    thread.join(15)
    a(attempt(lambda: thread.is_alive()))
    a(popped)
    a(quiet(p))
    # An ordinary command on the subscribed RESP3 connection itself (redis-py hands its reply
    # to get_message as a "pong").
    p.execute_command("GET", "web:plain")
    a(next_messages(p, 1))
    p.execute_command("HGET", "tok:hash", "f2")
    a(next_messages(p, 1))
    p.unsubscribe("web:ps3:ch")
    a(next_messages(p, 1))
    p.punsubscribe()
    a(next_messages(p, 1))
    p.sunsubscribe()
    a(next_messages(p, 1))
    a(attempt(lambda: p.subscribed))
    a(attempt(lambda: pub.publish("web:ps3:ch", "gone")))
    a(attempt(lambda: pub.pubsub_numsub("web:ps3:ch")))
    p.close()
    r3.close()
    pub.close()
    blocker.close()
    return out


def pubsub_resp3_one_connection(host, port):
    """One RESP3 connection: subscribed, it keeps running ordinary commands, whose replies
    come in request order while pushes arrive in publication order."""
    out = []
    a = out.append
    pub = client(host, port, single_connection_client=True)
    conn = redis.Connection(host=host, port=port, protocol=3, socket_timeout=10, socket_connect_timeout=5)
    pushes = []
    conn.connect()
    conn._parser.set_pubsub_push_handler(lambda push: pushes.append(canon(push)) or push)
    replies = []

    def command(*args):
        conn.send_command(*args)

    def read_replies(n):
        for _ in range(n):
            try:
                replies.append(canon(conn.read_response()))
            except redis.exceptions.ResponseError as e:
                replies.append(canon(e))

    def wait_pushes(n):
        """Reads until `n` pushes came in all (no reply may be outstanding)."""
        deadline = time.monotonic() + (AFTER_MISS_WAIT if missed else MESSAGE_WAIT)
        while len(pushes) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.can_read(timeout=left):
                missed.append(conn)
                return False
            conn.read_response(push_request=True)
        return True

    command("SET", "web:ps3c:a", "1")
    command("SUBSCRIBE", "web:ps3c:ch", "tok:ps3c:ch")
    read_replies(1)
    a(attempt(lambda: wait_pushes(2)))
    command("SET", "tok:ps3c:b", "2")
    a(attempt(lambda: pub.publish("web:ps3c:ch", "p1")))
    command("GET", "web:ps3c:a")
    command("PING")
    a(attempt(lambda: pub.publish("tok:ps3c:ch", "p2")))
    command("MGET", "web:ps3c:a", "tok:ps3c:b", "impact:ps3c:none")
    command("INCR", "web:ps3c:a")
    command("HGETALL", "tok:ps3c:b")
    a(attempt(lambda: pub.publish("web:ps3c:ch", "p3")))
    read_replies(6)
    a(attempt(lambda: wait_pushes(5)))
    command("PSUBSCRIBE", "ps3c:*")
    a(attempt(lambda: wait_pushes(6)))
    a(attempt(lambda: pub.publish("ps3c:one", "p4")))
    command("GET", "tok:ps3c:b")
    read_replies(1)
    a(attempt(lambda: wait_pushes(7)))
    command("UNSUBSCRIBE", "web:ps3c:ch", "tok:ps3c:ch")
    command("PUNSUBSCRIBE", "ps3c:*")
    a(attempt(lambda: wait_pushes(10)))
    a(attempt(lambda: pub.publish("web:ps3c:ch", "nobody")))
    command("GET", "web:ps3c:a")
    read_replies(1)
    a(attempt(lambda: not conn.can_read(timeout=QUIET_WAIT)))
    a(replies)
    a(pushes)
    conn.disconnect()
    pub.close()
    return out


def main():
    host, port, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    # One connection per client, so connection state (names, WATCH) is where we expect it.
    r = client(host, port, single_connection_client=True)
    r2 = client(host, port, single_connection_client=True)
    seed_keys = {
        "strings": ["%sseed:%d" % (ns, i) for ns in NAMESPACES for i in range(5)],
        "hashes": ["%sseed:h" % ns for ns in NAMESPACES],
        "lists": ["%sseed:l" % ns for ns in NAMESPACES],
    }
    sections = [
        ("seeded", lambda: seeded_reads(r, seed_keys)),
        ("plain", lambda: plain_commands(r)),
        ("pipeline", lambda: plain_pipeline(r, rng, 1000)),
        ("transaction", lambda: transactions(r)),
        ("watch", lambda: watch_transactions(r, r2)),
        ("multi_key", lambda: multi_key(r)),
        ("resp3", lambda: resp3(host, port)),
        ("client_name", lambda: client_names(host, port, r)),
        ("pubsub", lambda: pubsub_resp2(host, port)),
        ("pubsub_resp3", lambda: pubsub_resp3(host, port)),
        ("pubsub_resp3_one_connection", lambda: pubsub_resp3_one_connection(host, port)),
        ("seeded_after", lambda: seeded_reads(r, seed_keys)),
    ]
    results = {"redis_py": redis.__version__}
    for name, run in sections:
        try:
            results[name] = run()
        except Exception as e:  # noqa: BLE001 - recorded, compared and shown by the test
            results[name] = {
                "section_failed": canon(e),
                "traceback": traceback.format_exc().splitlines()[-3:],
            }
    r.close()
    r2.close()
    json.dump(results, sys.stdout, sort_keys=True, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
