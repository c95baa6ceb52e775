"""The outage, reproduced for leakcheck's tests: a Flask app leaking a Kafka consumer per page view.

Every GET / starts a thread that builds a kafka-python KafkaConsumer and loops
``for message in consumer`` forever; nothing ever stops it, so each page view leaves two threads
behind (the loop and kafka-python's ``kafka-io-leaky-<n>``), just as the original server did.
Python 3.11 gives none of them an OS name. It also serves ``/debug/threads`` in the format
leakcheck reads, so ``leakcheck --url`` can put Python names and stacks on the leaked threads.

Run: python leaky_app.py BOOTSTRAP TOPIC PORT
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
import traceback

from flask import Flask, jsonify
from kafka import KafkaConsumer

BOOTSTRAP, TOPIC, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Flask(__name__)
views = itertools.count(1)


def tail_forever(view: int) -> None:
    consumer = KafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, client_id=f"leaky-{view}")
    for message in consumer:   # the bug: no timeout, no stop, no close
        pass


@app.get("/")
def page():
    threading.Thread(target=tail_forever, args=(next(views),), daemon=True).start()
    return "tailing\n"


def os_name(tid: int | None) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@app.get("/debug/threads")
def debug_threads():
    frames = sys._current_frames()
    return jsonify(pid=os.getpid(), threads=[
        {"native_id": t.native_id, "name": t.name, "os_name": os_name(t.native_id),
         "role": "unknown",
         "stack": [f"{fs.filename}:{fs.lineno} in {fs.name}"
                   for fs in traceback.extract_stack(frames[t.ident])]}
        for t in threading.enumerate() if t.ident in frames])


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=PORT, threaded=True)
