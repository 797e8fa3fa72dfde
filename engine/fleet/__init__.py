"""``engine serve --workers N``: N worker processes on one port that act as one server.

``supervisor`` starts and restarts the workers, serves their merged metrics, and relays
control operations (``engine.serving.control``) to all of them; ``worker`` is one worker
process; ``channel`` is the framed JSON they speak over a Unix socket.
"""
