"""How a Midcall NATS connection notices a server gone silent.

A node that is cut off or frozen (partitioned, SIGSTOPped, a stalled VM) keeps
its TCP connections open: nothing fails, replies just never come. nats-py
would notice after two unanswered pings two minutes apart. Pinging every
second and giving up after three unanswered moves a connection to another
node of the cluster within about four seconds, while an event loop busy for a
second or two (a burst of calls) is not taken for a dead server.
"""

from typing import Final

PING_INTERVAL_S: Final = 1
MAX_OUTSTANDING_PINGS: Final = 3
# nats.connect's keyword arguments (FastStream's NatsBroker takes the same).
SILENCE_DETECTION: Final = {
    "ping_interval": PING_INTERVAL_S,
    "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
}
