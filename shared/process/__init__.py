"""Running one service process: its life cycle from start to a clean stop, its memory budget,
its SQL engines, its REST API (the error shape and the server in its own event loop), and
child processes that never outlive it."""
