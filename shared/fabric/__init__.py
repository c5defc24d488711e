"""The NATS messaging fabric: the connection, JetStream's streams and buckets, publishing and
consuming, and the state services keep in it (call marks, deadline timers, conversation
variables), with what rides out an outage or a message that never settles, and the embedded
nats-server that ``midcall up`` and the tests run."""
