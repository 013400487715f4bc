"""The engine: the supervisor (`supervisor.py`), its encode workers
(`encoder.py`), the handle the server starts and watches it with
(`handle.py`), and the control block (`control.py`). It never imports Flask:
HTTP reaches it only through the store and the control block."""
