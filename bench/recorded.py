"""The ``openai`` function with every Firestore RPC recorded (the hot runs' instances).

Started by ``bench/hot.py`` exactly as production starts the function
(``python -m functions_framework --source bench/recorded.py --target openai``: gunicorn,
gthread, ``THREADS``), but with this file as the source: it installs
``bench.rpc.RpcRecorder`` in detail mode before the proxy creates its Firestore
client, then serves the unchanged entry point of ``functions/main.py``. Each call's
record (method, wall-clock start, duration, written document paths, documents read)
is appended to ``$BENCH_RPC_DIR/rpc-<pid>.jsonl`` as the call ends. The recorder only
looks at gRPC requests and answers, so it measures whatever ledger is in the tree.
"""

import os

from bench.rpc import JsonlSink, RpcRecorder

_directory = os.environ.get("BENCH_RPC_DIR")
if _directory:
    # gunicorn imports this in its master and forks the worker, which inherits the
    # patched gRPC classes; the sink opens its file in the process that records.
    recorder = RpcRecorder(detail=True, sink=JsonlSink(_directory), keep=False).install()
    recorder.enabled = True

from functions.main import openai  # noqa: E402 - after the recorder, on purpose

__all__ = ["openai"]
