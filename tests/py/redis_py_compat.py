"""redis-py compatibility workload for turnout (driven by tests/compat_redis_py.rs).

Runs the same deterministic workload against one address and prints every result as one
canonical JSON document on stdout. The Rust test runs it against a plain redis-server and
against turnout in front of two servers, then requires both documents to be identical.

Only commands whose results do not depend on which server holds which keys are used: no
DBSIZE, KEYS, SCAN, RANDOMKEY, INFO or CLIENT ID; multi-key commands span namespaces only
where turnout splits them (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH); transactions stay in one
namespace. Pub/Sub is left out: turnout does not support subscriptions yet.

Usage: redis_py_compat.py HOST PORT SEED
"""

import base64
import json
import random
import sys
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
