"""What a tool call becomes on its way to an HTTP API and back, for every service that runs
one: its arguments checked and bound (``binding``), the request rendered (``render``) and
shown without its secrets (``preview``, ``redaction``), sent by the one outbound client
(``client``, within the destination policy and the response size cap), the response mapped
to a result (``mapping``), a failure worded (``results``), which runs ops keep (``runs``),
and what the call costs (``metering``). All pure functions but ``client``. The dispatcher
binds, the executor renders and sends, the injector maps and meters, and the registry's
replay previews with the same code."""
