#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/ (committed; rerun after a
change to proto/taskq/v1/taskq.proto or to an input format). Valid requests
are encoded with `protoc --encode` from their text form, so the fuzzers
start from inputs that reach the engine.

    tests/fuzz/make_seeds.py
"""
import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
METHODS = ["CreateQueue", "ListQueues", "GetQueueStats", "DeleteQueue", "PurgeQueue",
           "UpdateQueue", "ShutdownQueue", "GetTask", "CancelTask", "ListDead", "RequeueDead",
           "PurgeDead", "Put", "Get", "Complete", "Fail", "Release", "TaskDone", "Join", "Ack"]
WORK = len(METHODS)


def encode(message, text):
    return subprocess.run(
        ["protoc", "-I", os.path.join(ROOT, "proto"), "--encode=taskq.v1." + message,
         "taskq/v1/taskq.proto"],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


def encode_stored(message, text):
    return subprocess.run(
        ["protoc", "-I", os.path.join(ROOT, "proto"), "--encode=taskq.v1." + message,
         "taskq/v1/stored.proto"],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


def call(method, body):
    # [method byte][2-byte little-endian length][body] (tests/fuzz/fuzz_reader.h)
    index = METHODS.index(method) if method != "Work" else WORK
    return bytes([index]) + struct.pack("<H", len(body)) + body


def short(data):
    return bytes([len(data)]) + data


def wide(data):
    return struct.pack("<H", len(data)) + data


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    requests = {
        "CreateQueue": ("CreateQueueRequest", 'config { name: "q" kind: QUEUE_KIND_PRIORITY maxsize: 10 }'),
        "Put": ("PutRequest", 'queue: "q" tasks { payload: "7" handler: "square" reply_to: "r" '
                'dedup_key: "k" headers { key: "h" value: "v" } } nowait: true'),
        "Get": ("GetRequest", 'queue: "q" max_tasks: 5 nowait: true mode: GET_MODE_LEASE '
                'lease_ms: 500 acks { task_id: 1 lease_id: 1 }'),
        "Ack": ("AckRequest", 'leases { task_id: 1 lease_id: 1 } leases { task_id: 2 lease_id: 9 }'),
        "Complete": ("CompleteRequest", 'task_id: 1 lease_id: 1 result: "49"'),
        "Fail": ("FailRequest", 'task_id: 1 lease_id: 1 error: "boom" permanent: true'),
        "Release": ("ReleaseRequest", "task_id: 1 lease_id: 1 delay_ms: 5"),
        "ListDead": ("ListDeadRequest", 'queue: "q" limit: 10'),
        "RequeueDead": ("RequeueDeadRequest", 'queue: "q"'),
        "UpdateQueue": ("UpdateQueueRequest", 'queue: "q" update { maxsize: 3 lease_ms: 500 }'),
        "ShutdownQueue": ("ShutdownQueueRequest", 'queue: "q" immediate: true'),
        "Join": ("JoinRequest", 'queue: "q" timeout_ms: 1'),
        "GetTask": ("GetTaskRequest", "task_id: 1"),
        "CancelTask": ("CancelTaskRequest", "task_id: 1"),
        "TaskDone": ("TaskDoneRequest", 'queue: "q" count: 1'),
        "PurgeQueue": ("PurgeQueueRequest", 'queue: "q"'),
        "DeleteQueue": ("DeleteQueueRequest", 'queue: "q"'),
        "ListQueues": ("ListQueuesRequest", ""),
    }
    encoded = {m: encode(t, text) for m, (t, text) in requests.items()}
    for m, body in encoded.items():
        write("service_fuzz", m.lower(), call(m, body))
    # A session: create, put, lease, complete, and a worker stream.
    start = encode("WorkRequest", 'start { queues: "q" worker_id: "w" } credits: 10')
    report = encode("WorkRequest", 'completions { task_id: 1 lease_id: 1 result: "ok" } '
                    'extend_lease_ids: 1 credits: 1')
    write("service_fuzz", "session",
          call("CreateQueue", encoded["CreateQueue"]) + call("Put", encoded["Put"]) +
          call("Get", encoded["Get"]) + call("Complete", encoded["Complete"]))
    write("service_fuzz", "work", call("Work", short(start) + short(report)))

    # Stored records as the master writes them: [flags][queues][tasks].
    sq = encode_stored("StoredQueue",
                       'config { name: "q" kind: QUEUE_KIND_FIFO lease_ms: 30000 max_attempts: 3 }')
    ready = encode_stored("StoredTask", 'task { queue: "q" handler: "square" attempt: 1 } '
                          "ready_minor: 7")
    dead = encode_stored("StoredTask", 'task { queue: "q" state: TASK_STATE_DEAD attempt: 3 } '
                         'dead_in: "q"')
    delayed = encode_stored("StoredTask", 'task { queue: "q" state: TASK_STATE_DELAYED } '
                            "due_unix_us: 1700000000000000")
    leased = encode_stored("StoredTask", 'task { queue: "q" state: TASK_STATE_LEASED attempt: 1 } '
                           'holder: "w"')
    tasks = b"".join(struct.pack("<Q", i + 1) + wide(rec) + wide(b"7")
                     for i, rec in enumerate([ready, dead, delayed, leased]))
    write("stored_record_fuzz", "queue-and-tasks",
          bytes([3]) + bytes([1]) + short(b"q") + wide(sq) + bytes([4]) + tasks +
          struct.pack("<Q", 1 << 20) + struct.pack("<Q", 2))

    write("config_fuzz", "token",
          wide(b"0123456789abcdef0123456789abcdef\n") +
          wide(b"Bearer 0123456789abcdef0123456789abcdef") + short(b"ipv6:%5B::1%5D:5000") +
          short(b"always") + wide(b"wc=/usr/bin/wc -l"))
    write("config_fuzz", "peer-v4", wide(b"abc") + wide(b"Bearer abc") +
          short(b"ipv4:127.0.0.1:40000") + short(b"interval") +
          wide(b"conv='/usr/bin/convert' \"in put\" 'a b' x\\ y"))

    # A real write-ahead log, as SQLite leaves it when the process dies.
    import sqlite3
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "t.db"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        for i in range(3):
            db.execute("INSERT INTO t(v) VALUES (?)", (bytes([i]) * 300,))
            db.commit()
        with open(os.path.join(d, "t.db-wal"), "rb") as f:
            wal = f.read()
        db.close()
    write("wal_fuzz", "three-transactions", struct.pack("<H", 2048) + wal)
    write("wal_fuzz", "torn", struct.pack("<H", 2048) + wal[:len(wal) - 100])
    return 0


if __name__ == "__main__":
    sys.exit(main())
