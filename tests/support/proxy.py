"""A loopback TCP proxy that can go silent on demand, for half-open connection tests."""

from __future__ import annotations

import selectors
import socket
import threading

LOOPBACK = "127.0.0.1"


class TcpProxy:
    """A loopback TCP proxy that can go silent, to make half-open connections on demand.

    ``cut()`` keeps every socket open but reads and discards what either side sends, which is what a
    dead NAT entry or an unplugged cable upstream looks like: no FIN, no RST, just silence.
    ``resume()`` forwards again.
    """

    def __init__(self, listen_port: int, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, listen_port))
        self._listener.listen()
        self.port: int = self._listener.getsockname()[1]
        self.host = LOOPBACK
        self._forwarding = True
        self._closed = False
        self._lock = threading.Lock()
        self._dropped_bytes = 0
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._drop_requested = threading.Event()
        self._drop_done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"tcp-proxy-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def dropped_bytes(self) -> int:
        """Bytes read and thrown away while cut."""
        with self._lock:
            return self._dropped_bytes

    @property
    def connection_count(self) -> int:
        """Open client connections."""
        with self._lock:
            return len(self._peers) // 2

    def cut(self) -> None:
        """Stop forwarding in both directions; sockets stay open."""
        with self._lock:
            self._forwarding = False

    def resume(self) -> None:
        """Forward again (bytes dropped while cut stay lost)."""
        with self._lock:
            self._forwarding = True

    def drop_connections(self) -> None:
        """Close every current connection (both ends see EOF) but keep accepting new ones."""
        self._drop_requested.set()
        self._wake_writer.send(b"x")
        if not self._drop_done.wait(5.0):
            raise RuntimeError("proxy thread did not drop its connections")
        self._drop_done.clear()

    def _run(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif sock is self._wake_reader:
                    sock.recv(64)
                    if self._drop_requested.is_set():
                        self._drop_all()
                else:
                    self._relay(sock)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5.0)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._peers[client] = upstream
            self._peers[upstream] = client
        self._selector.register(client, selectors.EVENT_READ, None)
        self._selector.register(upstream, selectors.EVENT_READ, None)

    def _relay(self, source: socket.socket) -> None:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            destination = self._peers.get(source)
            forwarding = self._forwarding
            if data and not forwarding:
                self._dropped_bytes += len(data)
        if destination is None:
            return
        if not data:
            self._drop_pair(source, destination)
            return
        if forwarding:
            try:
                destination.sendall(data)
            except OSError:
                self._drop_pair(source, destination)

    def _drop_all(self) -> None:
        with self._lock:
            sockets = list(self._peers)
            self._peers.clear()
        for sock in sockets:
            self._selector.unregister(sock)
            sock.close()
        self._drop_requested.clear()
        self._drop_done.set()

    def _drop_pair(self, one: socket.socket, other: socket.socket) -> None:
        with self._lock:
            self._peers.pop(one, None)
            self._peers.pop(other, None)
        for sock in (one, other):
            self._selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        """Close the listener and every connection (the clients see EOF)."""
        self._closed = True
        self._wake_writer.send(b"x")
        self._thread.join(5.0)
        with self._lock:
            sockets = list(self._peers)
            self._peers.clear()
        for sock in sockets:
            sock.close()
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()
        self._selector.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
