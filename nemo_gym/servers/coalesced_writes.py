"""One send per answer: a served connection's writes made in one turn of the event loop go out together.

uvicorn writes an answer in two calls, its status line and headers, then its body, and the event loop sends
each at once: two syscalls and two TCP segments per answer, and the caller is woken, reads and parses twice.
Every call between our servers paid that, and the model server's answers do in every mode.
`CoalescedWrites` wraps a connection's transport and holds what is written until the end of the current
turn of the loop, then sends it with one write. An answer that is sent in one go (all of ours: a body
rendered before the answer starts) leaves as one segment; a streamed answer still leaves chunk by chunk,
each at most one turn late.

It holds at most `MAX_HELD_BYTES`: a write that would go past that sends what is held at once (a large body
goes out as the event loop would have sent it), so the transport's flow control (pausing a writer whose
reader is slow) sees every byte as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

MAX_HELD_BYTES = 64 * 1024


class CoalescedWrites(asyncio.Transport):
    """`transport` with its writes held until the end of the loop's turn (module docstring); every other
    part of the transport's API is the transport's own."""

    __slots__ = ("_transport", "_loop", "_held", "_held_bytes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    # ---- writing -------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        held = self._held
        if held is None:
            if len(data) >= MAX_HELD_BYTES:
                self._transport.write(data)
                return
            self._held = [bytes(data)]
            self._held_bytes = len(data)
            self._loop.call_soon(self.flush)
            return
        if self._held_bytes + len(data) > MAX_HELD_BYTES:
            self.flush()
            self._transport.write(data)
            return
        held.append(bytes(data))
        self._held_bytes += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is held now (called at the end of the turn in which it was written)."""
        held = self._held
        if held is None:
            return
        self._held, self._held_bytes = None, 0
        if self._transport.is_closing():
            return  # the peer went away within the turn: there is no one to send it to
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()  # what was written before the close is sent before it, as the transport would
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = None, 0  # an abort drops what is unsent
        self._transport.abort()

    # ---- the rest is the transport's own ----------------------------------------------------------
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()  # a protocol taking over (an upgrade) writes after what this one wrote
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()
