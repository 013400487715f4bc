"""Put on PYTHONPATH by tests/test_layers.py: every Python process of the
server under test writes, as it exits, which modules it had imported, to
$REFRESHER_MODULE_REPORT/<pid>.json."""

import atexit
import json
import os
import sys

_PARENT = os.getppid()  # as it started: a child may outlive its parent


def _forked():
    global _PARENT
    _PARENT = os.getppid()


os.register_at_fork(after_in_child=_forked)


def _report():
    folder = os.environ.get("REFRESHER_MODULE_REPORT")
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as f:
            json.dump({"pid": os.getpid(), "ppid": _PARENT, "argv": sys.argv, "modules": sorted(sys.modules)}, f)


atexit.register(_report)
