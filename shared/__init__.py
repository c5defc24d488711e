"""What two or more services use, grouped by concern: the wire contract (``contract``), the
NATS messaging fabric (``fabric``), security (``security``), tracing and metrics
(``observability``), what a tool call becomes on its way to an API and back (``calls``), and
the plumbing of a service process (``process``). ``settings`` is the one settings object every
process reads, whichever group it uses."""
