"""The engine: the supervisor, its encode workers and the control block. It
never imports Flask: HTTP reaches it only through the store and the control
block."""
