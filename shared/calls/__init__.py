"""What a tool call becomes on its way to an HTTP API, as pure functions every service may use:
its arguments checked and bound (``binding``), the request rendered (``render``) and shown
without its secrets (``preview``, ``redaction``). The dispatcher binds, the executor renders
and sends, and the registry's replay previews with the same code."""
