"""redis-py over TLS with its defaults (certificate and host name checked):
ssl=True, ssl_ca_certs, and a client certificate for --tls-auth-clients yes."""
import ssl
import sys

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Refusals are expected below: no retries, so they come back at once.
NO_RETRY = Retry(NoBackoff(), 0)

port, certs = int(sys.argv[1]), sys.argv[2]
FLAG = '{"on":true,"variations":[{"name":"a","value":"A"},{"name":"b","value":"B"}],"off_variation":"a","fallthrough":{"variation":"b"}}'


def client(**extra):
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=f"{certs}/ca.pem",
                       socket_timeout=5, **extra)


r = client(ssl_certfile=f"{certs}/client.pem", ssl_keyfile=f"{certs}/client.key")
assert r.ping() is True
assert r.execute_command("FLAG.SET", "py:tls", FLAG) >= 1
assert r.execute_command("FLAG.EVAL", "py:tls", '{"key":"u"}') == b'"B"'
# The host name is checked: the certificate names 127.0.0.1 (an IP SAN).
assert r.connection_pool.connection_kwargs["ssl_check_hostname"] is True

for name, extra in [
    ("no client certificate", {}),
    ("a certificate from another CA",
     {"ssl_certfile": f"{certs}/foreign.pem", "ssl_keyfile": f"{certs}/foreign.key"}),
]:
    try:
        client(retry=NO_RETRY, **extra).ping()
    except (redis.ConnectionError, ssl.SSLError, OSError):
        pass
    else:
        raise AssertionError(f"{name}: accepted")

# A server certificate the client's CA did not sign is refused by the client.
try:
    redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=f"{certs}/foreign-ca.pem",
                ssl_certfile=f"{certs}/client.pem", ssl_keyfile=f"{certs}/client.key",
                socket_timeout=5, retry=NO_RETRY).ping()
except (redis.ConnectionError, ssl.SSLError, OSError) as e:
    assert "certificate verify failed" in str(e), e
else:
    raise AssertionError("an untrusted server was accepted")
print("redis-py TLS ok")
