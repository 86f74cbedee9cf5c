"""An in-process copy of every flag and segment, kept current with
flagstaff's change stream (redis-py).

Load once with FLAG.DUMP, then follow `flagstaff:changes` with XREAD from
the dump's `stream_id`. After a disconnect or a server restart, reading on
from the last entry id misses nothing and repeats nothing; if that position
was compacted away, the server says so with a `resync` entry and the cache
reloads.

    cache = LocalFlags(port=6390)
    cache.load()
    threading.Thread(target=cache.follow, daemon=True).start()
    cache.flags["prod:new-checkout"]   # the definition, as FLAG.GET returns it
"""

import json
import threading
import time

import redis

STREAM = "flagstaff:changes"


class LocalFlags:
    """Flags and segments by key, as of `last_id` in the change stream."""

    def __init__(self, **connection):
        self.redis = redis.Redis(decode_responses=True, **connection)
        self.flags = {}
        self.segments = {}
        self.last_id = None
        self.changes = 0
        self.lock = threading.Lock()

    def load(self):
        """Replaces the copy with a consistent dump and remembers where it ends."""
        doc = json.loads(self.redis.execute_command("FLAG.DUMP"))
        with self.lock:
            self.flags = doc["flags"]
            self.segments = doc["segments"]
            self.last_id = doc["stream_id"]

    def apply(self, entry_id, fields):
        """Applies one stream entry."""
        if fields["event"] == "resync":
            self.load()
            return
        table = self.flags if fields["kind"] == "flag" else self.segments
        with self.lock:
            if fields["event"] == "delete":
                table.pop(fields["key"], None)
            else:
                table[fields["key"]] = json.loads(fields["definition"])
            self.last_id = entry_id
            self.changes += 1

    def poll(self, block_ms=1000):
        """Reads and applies what arrived after `last_id`; returns how many entries."""
        reply = self.redis.xread({STREAM: self.last_id}, block=block_ms, count=1000)
        if not reply:
            return 0
        # RESP3 (redis-py 8's default) gives a dict, RESP2 a list of [stream, entries].
        streams = reply.items() if isinstance(reply, dict) else reply
        count = 0
        for _, entries in streams:
            for entry_id, fields in entries:
                self.apply(entry_id, fields)
                count += 1
        return count

    def follow(self, stop=None, block_ms=1000):
        """Keeps applying changes until `stop` is set, riding out disconnects."""
        while stop is None or not stop.is_set():
            try:
                if self.last_id is None:
                    self.load()
                self.poll(block_ms)
            except redis.ConnectionError:
                time.sleep(0.2)  # the server restarts; resume from last_id


if __name__ == "__main__":
    cache = LocalFlags(port=6390)
    cache.load()
    print(f"{len(cache.flags)} flags at {cache.last_id}; following changes")
    while True:
        if cache.poll():
            print(f"{len(cache.flags)} flags at {cache.last_id}")
