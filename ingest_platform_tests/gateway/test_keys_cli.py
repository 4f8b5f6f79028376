"""`ingest-platform keys ...`: create (shown once, stored hashed), list, revoke, expiry, per-key limits."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from ingest_platform.cli import app
from ingest_platform.storage import api_keys


def test_keys_create_list_revoke_and_expire(platform_env, redis_client):
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "ios-app", "--scopes", "user_interaction",
                                  "--rate", "100", "--burst", "200"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    key_id = api_keys.split_key(key)
    record = api_keys.get_record(redis_client.hget(api_keys.KEYS_HASH, key_id))
    assert record.scopes == ["user_interaction"] and (record.rate_per_second, record.burst) == (100, 200)
    assert key not in redis_client.hget(api_keys.KEYS_HASH, key_id).decode()  # only the hash is stored

    short = runner.invoke(app, ["keys", "create", "temp", "--expires-in", "0.2"]).output.strip().splitlines()[-1]
    time.sleep(0.3)
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    listed = runner.invoke(app, ["keys", "list"]).output
    assert f"{key_id}\tios-app\tuser_interaction\trevoked" in listed
    assert f"{api_keys.split_key(short)}\ttemp\t" in listed and "\texpired" in listed
    assert key not in listed and short not in listed
    assert runner.invoke(app, ["keys", "revoke", "nope"]).exit_code == 1
