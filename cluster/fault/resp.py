"""A minimal blocking RESP2 client (standard library only) for the fault harness."""

import socket


class RespError(Exception):
    """An error reply from the server (definite: the server answered)."""


class Conn:
    """One connection; any socket problem raises OSError (the outcome is then unknown)."""

    def __init__(self, host, port, password=None, timeout=6.0):
        self.sock = socket.create_connection((host, port), timeout=min(timeout, 2.0))
        self.sock.settimeout(timeout)
        self.buf = b""
        if password:
            self.call("AUTH", password)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def call(self, *args):
        self.send(*args)
        reply = self.read()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def settimeout(self, t):
        self.sock.settimeout(t)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind in (b"*", b">"):
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"bad reply line {line[:40]!r}")
