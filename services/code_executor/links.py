"""A socket of frames to a jail, read and written without blocking the event loop.

asyncio's own transports cannot take descriptors out of a message
(``SCM_RIGHTS``), and the zygote hands each call's socket over that way, so
both the zygote's socket and each call's are read here: ``recv`` (or
``recv_fds``) when the loop says readable, and writes queued in order
behind whatever the kernel did not take yet.
"""

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from services.code_executor.sandbox.frames import BadFrame, Buffer, pack

RECEIVE_BYTES = 1 << 16
MAX_FDS = 16


class Link:
    """Frames to and from one socket; ``closed`` is called once, when either end closes it."""

    def __init__(
        self,
        sock: socket.socket,
        received: Callable[[dict[str, Any], bytes], None],
        closed: Callable[[], None],
        takes_fds: bool = False,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fds: deque[int] = deque()  # received, in order, each for the frame it came with
        self._received = received
        self._closed = closed
        self._takes_fds = takes_fds
        self._buffer = Buffer()
        self._unsent = bytearray()
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self.open = True
        self.malformed = False  # closed because the peer sent something that is not a frame
        self._loop.add_reader(self._fd, self._readable)

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        if not self.open:
            return
        data = pack(header, body)
        if self._unsent:
            self._unsent += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the peer is gone: reading says so
        if sent < len(data):
            self._unsent += data[sent:]
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._unsent)
        except BlockingIOError:
            return
        except OSError:
            sent = len(self._unsent)
        del self._unsent[:sent]
        if not self._unsent:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> bool:
        """Whether there may be more to read now."""
        try:
            if self._takes_fds:
                data, fds, _, _ = socket.recv_fds(
                    self.sock, RECEIVE_BYTES, MAX_FDS, socket.MSG_CMSG_CLOEXEC
                )
                self.fds.extend(fds)
            else:
                data = self.sock.recv(RECEIVE_BYTES)
            frames = self._buffer.feed(data) if data else None
        except BlockingIOError:
            return False
        except BadFrame:
            self.malformed, frames = True, None
        except OSError:
            frames = None
        if frames is None:
            self.close()
            return False
        for header, body in frames:
            if not self.open:
                return False  # a frame closed it: the rest is not read
            self._received(header, body)
        return True

    def drain(self) -> None:
        """Read what a peer that has gone away sent before it went, then close."""
        while self.open and self._readable():
            pass
        self.close()

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        self._loop.remove_reader(self._fd)
        if self._unsent:
            self._loop.remove_writer(self._fd)
        self.sock.close()
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.popleft())
        self._closed()
