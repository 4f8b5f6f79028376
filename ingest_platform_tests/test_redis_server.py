"""The private Redis-compatible server works on a machine with no redis-server installed."""

import redis

from ingest_platform.storage.redis_server import RedisServer, find_redis_server

STREAM = "ingest:events:user_interaction"


def test_without_redis_on_path_the_bundled_valkey_server_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    binary = find_redis_server()
    assert binary.endswith("valkey-server")

    server = RedisServer(directory=tmp_path / "valkey", binary=binary, appendfsync="always").start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.xadd(STREAM, {"entry": b"{}"})
        server.restart(kill=True)  # kill -9: with appendfsync always the entry was on disk already
        assert client.xlen(STREAM) == 1
        client.xadd(STREAM, {"entry": b"{}"})
        server.restart()  # clean shutdown
        assert client.xlen(STREAM) == 2
    finally:
        server.stop()
