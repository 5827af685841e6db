"""The test servers themselves: they answer, and a restart brings them back on the same port."""

from __future__ import annotations

import psycopg
import redis


def test_redis_answers_and_comes_back_after_a_restart(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    client.close()


def test_postgres_answers_and_comes_back_after_a_restart(postgres_server):
    with psycopg.connect(postgres_server.url) as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("em",)
    postgres_server.restart()
    with psycopg.connect(postgres_server.url) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_missing_binaries_name_the_debian_packages(monkeypatch, tmp_path):
    import pytest

    from tests import servers

    monkeypatch.setattr(servers.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    for make in (servers.PostgresServer, servers.RedisServer):
        with pytest.raises(servers.MissingServer, match="apt-get install -y -qq redis-server postgresql"):
            make(tmp_path)


def test_a_persistent_redis_keeps_its_keys_across_a_restart(tmp_path):
    from tests.servers import RedisServer

    server = RedisServer(tmp_path, persistent=True)
    server.start()
    try:
        redis.Redis.from_url(server.url).set("kept", b"1")
        server.restart()
        assert redis.Redis.from_url(server.url).get("kept") == b"1"
    finally:
        server.stop()
