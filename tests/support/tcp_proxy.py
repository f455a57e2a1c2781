"""A TCP proxy for tests that lose a database reply: it forwards a COMMIT, then cuts the line.

A daemon connects to the database through the proxy. Once ``arm(marker)`` is called, the
first transaction on any connection that sends a statement containing ``marker`` and then
``COMMIT`` has its COMMIT forwarded to the server (which commits), and the connection is
cut before the server's reply reaches the client: the client cannot know that the commit
happened, as after a failover or a network blip at the wrong moment.
"""

import select
import socket
import threading

#: The text of a COMMIT as it crosses the wire: in psycopg2's simple-query message ('Q',
#: length, text) and in the extended protocol's Parse message psycopg 3 may send alike.
COMMIT = b"COMMIT\x00"


class CommitCutter:
    """Listens on a free local port and forwards each connection to ``(host, port)``."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker: bytes | None = None
        self.cut = threading.Event()  # set once a COMMIT was forwarded and its reply dropped
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "CommitCutter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping = True
        self.listener.close()

    def arm(self, marker: bytes) -> None:
        """Cut the next COMMIT of a transaction that sent a statement containing ``marker``."""
        with self._lock:
            self.marker = marker

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def _pipe(self, client: socket.socket, server: socket.socket) -> None:
        seen_marker = False
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [])
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        marker = self.marker
                        if marker is not None and marker in data:
                            seen_marker = True
                        if seen_marker and COMMIT in data:
                            self.marker = None
                            server.sendall(data)
                            self._drop_reply(server)
                            return
                    server.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def _drop_reply(self, server: socket.socket) -> None:
        """Read the server's answer to the COMMIT (so it surely committed), send none of it."""
        reply = b""
        while b"COMMIT\x00" not in reply:
            data = server.recv(65536)
            if not data:
                break
            reply += data
        self.cut.set()
