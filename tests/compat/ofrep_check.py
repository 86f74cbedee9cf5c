"""OFREP through the real Python OpenFeature SDK and its OFREP provider:
values, variants, reasons and metadata as the SDK reports them, errors, and
a 429 the provider respects. Usage: ofrep_check.py RESP_PORT HTTP_PORT LIMITED_RESP LIMITED_HTTP"""

import json
import pathlib
import sys
import time

import redis
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

resp_port, http_port, limited_resp, limited_http = map(int, sys.argv[1:5])
flags = json.loads((pathlib.Path(__file__).parent / "ofrep_flags.json").read_text())


def load(port, password=None):
    r = redis.Redis(port=port, password=password)
    for key, definition in flags.items():
        r.execute_command("FLAG.SET", key, json.dumps(definition))
    return r


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


r = load(resp_port)
api.set_provider(OFREPProvider(f"http://127.0.0.1:{http_port}"), domain="main")
client = api.get_client("main")
ctx = EvaluationContext("user-1", {"plan": "pro"})

d = client.get_boolean_details("compat:enabled", False, ctx)
check((d.value, d.variant, d.reason) == (True, "on", Reason.TARGETING_MATCH), f"boolean: {d}")
check(d.flag_metadata.get("rule_id") == "pro" and isinstance(d.flag_metadata.get("version"), int), f"metadata: {d}")
check(d.error_code is None, f"no error: {d}")
d = client.get_boolean_details("compat:enabled", False, EvaluationContext("user-1"))
check((d.value, d.reason) == (False, Reason.DEFAULT), f"boolean fallthrough: {d}")
d = client.get_string_details("compat:banner", "x")
check((d.value, d.variant, d.reason) == ("hi there", "fancy", Reason.STATIC), f"string without context: {d}")
d = client.get_integer_details("compat:limit", 0, ctx)
check(d.value in (10, 25) and d.reason == Reason.SPLIT and isinstance(d.value, int), f"integer: {d}")
d = client.get_integer_details("compat:limit", 7)
check(d.value == 7 and d.error_code == ErrorCode.TARGETING_KEY_MISSING, f"split without a targeting key: {d}")
d = client.get_float_details("compat:ratio", 0.0, ctx)
check((d.value, d.variant, d.reason) == (0.5, "half", Reason.DEFAULT) and d.error_code is None, f"float: {d}")
d = client.get_float_details("compat:ratio", 0.0, EvaluationContext("vip"))
check((d.value, d.reason) == (1.0, Reason.TARGETING_MATCH) and d.error_code is None, f"float 1.0 stays a float: {d}")
d = client.get_object_details("compat:theme", {}, ctx)
check(d.value == {"color": "blue"} and d.variant == "blue", f"object: {d}")
d = client.get_boolean_details("compat:killed", True, ctx)
check((d.value, d.variant, d.reason) == (False, "off", Reason.DISABLED), f"disabled: {d}")
d = client.get_boolean_details("compat:ghost", True, ctx)
check(d.value is True and d.error_code == ErrorCode.FLAG_NOT_FOUND and d.reason == Reason.ERROR, f"not found: {d}")
d = client.get_string_details("compat:enabled", "dflt", ctx)
check(d.value == "dflt" and d.error_code == ErrorCode.TYPE_MISMATCH, f"type mismatch: {d}")

# The same answers as a redis-cli user gets.
for key in flags:
    detail = r.execute_command("FLAG.DETAIL", key, json.dumps({"key": "user-1", "plan": "pro"}))
    detail = dict(zip(detail[::2], detail[1::2])) if isinstance(detail, list) else detail
    got = {
        "compat:enabled": lambda: client.get_boolean_details(key, False, ctx),
        "compat:banner": lambda: client.get_string_details(key, "", ctx),
        "compat:limit": lambda: client.get_integer_details(key, 0, ctx),
        "compat:ratio": lambda: client.get_float_details(key, 0.0, ctx),
        "compat:theme": lambda: client.get_object_details(key, {}, ctx),
        "compat:killed": lambda: client.get_boolean_details(key, True, ctx),
    }[key]()
    check(got.value == json.loads(detail[b"value"]), f"{key}: SDK {got.value!r} vs FLAG.DETAIL {detail[b'value']!r}")
    check(got.variant == detail[b"variation"].decode(), f"{key}: variant")
    check(str(got.reason) == detail[b"openfeature_reason"].decode(), f"{key}: reason {got.reason} vs {detail[b'openfeature_reason']}")

# A wrong credential on a password-protected server is refused (401): the
# SDK gives the default with an error. (Key-scoped users need the ACL issue;
# until then requirepass is the only user.)
load(limited_resp, "compat-pw")
api.set_provider(
    OFREPProvider(f"http://127.0.0.1:{limited_http}", headers_factory=lambda: {"Authorization": "Bearer alice:compat-pw"}),
    domain="intruder",
)
d = api.get_client("intruder").get_boolean_details("compat:enabled", False, ctx)
check(d.value is False and d.error_code is not None and d.reason == Reason.ERROR, f"wrong user: {d}")

# 429: the provider stops calling until Retry-After has passed.
api.set_provider(
    OFREPProvider(f"http://127.0.0.1:{limited_http}", headers_factory=lambda: {"X-API-Key": "default:compat-pw"}),
    domain="limited",
)
limited = api.get_client("limited")
results = [limited.get_boolean_details("compat:enabled", False, ctx) for _ in range(6)]
errors = [d for d in results if d.error_code is not None]
check(errors and all(d.value is False for d in errors), f"rate limited calls give the default: {results}")
check(any("paused" in (d.error_message or "") or "Rate limited" in (d.error_message or "") for d in errors), f"429 seen: {errors}")
time.sleep(1.5)
d = limited.get_boolean_details("compat:enabled", False, ctx)
check(d.value is True and d.error_code is None, f"after Retry-After the provider calls again: {d}")
print("python OpenFeature SDK + OFREP provider: all checks passed")
