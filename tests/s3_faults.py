"""S3 faults the tests stage on loopback: a black hole (accepts connections and never answers)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class BlackHole:
    """A listening socket that accepts every connection and never reads or writes; ``accepted`` counts them."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.create_server(("127.0.0.1", port), backlog=64)  # SO_REUSEADDR: moto's port is free again
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server.settimeout(0.1)  # the accept loop sees close() within 0.1 s
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def accepted(self) -> int:
        return len(self.held)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.server.close()
        for conn in self.held:
            conn.close()


@contextmanager
def black_hole(port: int = 0) -> Iterator[BlackHole]:
    """A :class:`BlackHole` on ``port`` (a free one by default), closed on exit."""
    hole = BlackHole(port)
    try:
        yield hole
    finally:
        hole.close()
