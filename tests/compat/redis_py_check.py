"""redis-py 8 with default settings (RESP3): connect, pipelines, flags."""

import json
import sys

import redis

FLAG = {
    "on": True,
    "variations": [{"name": "off", "value": False}, {"name": "on", "value": True}],
    "off_variation": "off",
    "rules": [{"id": "eu", "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}],
               "serve": {"variation": "on"}}],
    "fallthrough": {"variation": "off"},
}


def main(port: int) -> None:
    r = redis.Redis(port=port, decode_responses=True)
    assert r.ping() is True
    assert r.echo("hello") == "hello"
    assert r.client_setname("compat-py") is True
    assert r.client_getname() == "compat-py"
    info = r.info()
    assert info["role"] == "master" and info["loading"] == 0, info
    assert r.connection_pool.get_connection().protocol in (3, "3")

    with r.pipeline(transaction=False) as p:
        p.ping().echo("a").echo("b")
        assert p.execute() == [True, "a", "b"]

    key = "compat:py-checkout"
    with r.pipeline() as p:  # MULTI/EXEC, as redis-py does by default
        p.execute_command("FLAG.SET", key, json.dumps(FLAG))
        p.execute_command("FLAG.EVAL", key, json.dumps({"key": "u1", "country": "DE"}))
        version, value = p.execute()
    assert version == 1 and value == "true", (version, value)

    # A write refused in the middle of a transaction answers alone: redis-py
    # raises it after EXEC (naming the command), the writes around it apply.
    with r.pipeline() as p:
        p.execute_command("FLAG.SET", "compat:tx-a", json.dumps(FLAG))
        p.execute_command("FLAG.SET", "compat:tx-b", json.dumps(FLAG), "IFVERSION", 7)
        p.execute_command("FLAG.SET", "compat:tx-c", json.dumps(FLAG))
        try:
            p.execute()
            raise AssertionError("the refused write was not reported")
        except redis.ResponseError as e:
            assert "Command # 2" in str(e) and "is at version 0, not 7" in str(e), e
    with r.pipeline() as p:
        p.execute_command("FLAG.SET", "compat:tx-d", json.dumps(FLAG), "IFVERSION", 7)
        p.execute_command("FLAG.EVAL", "compat:tx-a", json.dumps({"key": "u1", "country": "DE"}))
        refused, value = p.execute(raise_on_error=False)
    assert isinstance(refused, redis.ResponseError) and value == "true", (refused, value)
    assert r.execute_command("FLAG.EVAL", "compat:tx-c", json.dumps({"country": "DE"})) == "true"
    assert r.execute_command("FLAG.GET", "compat:tx-b") is None
    assert r.execute_command("FLAG.GET", "compat:tx-d") is None

    assert r.execute_command("FLAG.EVAL", key, json.dumps({"key": "u1", "country": "US"})) == "false"
    detail = r.execute_command("FLAG.DETAIL", key, json.dumps({"key": "u1", "country": "FR"}))
    assert isinstance(detail, dict), detail
    assert detail["reason"] == "RULE_MATCH" and detail["rule_id"] == "eu", detail
    assert detail["stale"] is False, detail
    doc = json.loads(r.execute_command("FLAG.GET", key))
    assert doc["version"] == 1 and doc["on"] is True
    assert r.execute_command("FLAG.TOGGLE", key, "OFF", "REASON", "compat") == 2
    assert r.execute_command("FLAG.EVAL", key, json.dumps({"country": "DE"})) == "false"
    try:
        r.execute_command("FLAG.SET", key, '{"on": true}')
        raise AssertionError("invalid definition accepted")
    except redis.ResponseError as e:
        assert str(e).startswith("INVALID variations"), e
    assert key in r.execute_command("FLAG.LIST", "MATCH", "compat:*")
    assert r.execute_command("FLAG.DEL", key) == 1
    assert r.execute_command("FLAG.EVAL", key) is None
    check_acl(port, r)
    print("redis-py ok")


def check_acl(port: int, r: "redis.Redis") -> None:
    """acl_setuser/acl_getuser/acl_log parse our replies; a restricted user connects."""
    assert r.acl_whoami() == "default"
    assert r.acl_setuser(
        "py-eval", enabled=True, passwords=["+py-secret"], categories=["+connection", "+flag-eval"],
        keys=["prod:*"], channels=["flag:prod:*"], reset=True,
    ) is True
    u = r.acl_getuser("py-eval")
    assert u["enabled"] is True and "on" in u["flags"], u
    assert u["categories"] == ["-@all", "+@connection", "+@flag-eval"], u
    assert u["keys"] == ["~prod:*"] and u["channels"] == ["&flag:prod:*"], u
    assert len(u["passwords"]) == 1 and len(u["passwords"][0]) == 64, u
    assert r.acl_getuser("py-nobody") is None
    assert "py-eval" in r.acl_users()
    assert "flag-eval" in r.acl_cat()
    r.execute_command("FLAG.SET", "prod:py", json.dumps(FLAG))
    app = redis.Redis(port=port, username="py-eval", password="py-secret", decode_responses=True)
    assert app.execute_command("FLAG.EVAL", "prod:py", json.dumps({"country": "DE"})) == "true"
    try:
        app.execute_command("FLAG.EVAL", "staging:py", "{}")
        raise AssertionError("staging evaluated")
    except redis.exceptions.NoPermissionError as e:
        assert str(e) == "No permissions to access a key", e
    try:
        redis.Redis(port=port, username="py-eval", password="wrong").ping()
        raise AssertionError("wrong password accepted")
    except redis.AuthenticationError:
        pass
    log = r.acl_log(count=5)
    assert log and log[0]["reason"] == "auth" and log[0]["username"] == "py-eval", log
    keyed = [e for e in log if e["reason"] == "key"]
    assert keyed and keyed[0]["object"] == "staging:py", log
    assert isinstance(keyed[0]["client-info"], dict) and keyed[0]["client-info"]["user"] == "py-eval", keyed
    assert r.acl_log_reset() is True
    assert r.acl_deluser("py-eval") == 1


if __name__ == "__main__":
    main(int(sys.argv[1]))
