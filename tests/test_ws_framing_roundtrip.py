"""The fan-out fast path's hand-built frames, decoded by real WebSocket frame readers.

``hydrogen.server.wsframing.text_frame`` skips aiohttp's writer, so nothing but
these tests checks its bytes: every length class of RFC 6455 section 5.2 (7-bit,
16-bit and 64-bit payload length) with ASCII and 2-, 3- and 4-byte UTF-8, read
back by aiohttp's own frame reader (its C and pure-Python builds) and by the
``websockets`` library's parser, payloads compared exactly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket import reader as aiohttp_reader
from aiohttp._websocket import reader_py as aiohttp_reader_py
from aiohttp.base_protocol import BaseProtocol
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from hydrogen.server.wsframing import DIRECT_WRITE_LIMIT, direct_writer, text_frame

#: Payload sizes in bytes: both sides of every boundary of the length encoding.
LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]

#: One character per UTF-8 width: 1 (ASCII), 2, 3 and 4 bytes.
CHARS = {"ascii": "a", "utf8-2": "é", "utf8-3": "€", "utf8-4": "😀"}


def _text(length: int, char: str) -> str:
    """A text of exactly ``length`` UTF-8 bytes, as many ``char`` as fit, ASCII after."""
    width = len(char.encode("utf-8"))
    text = char * (length // width) + "{" * (length % width)
    assert len(text.encode("utf-8")) == length
    return text


CASES = [
    pytest.param(_text(length, char), id=f"{length}-{name}")
    for length in LENGTHS
    for name, char in CHARS.items()
] + [
    pytest.param("é€😀a" * 7000, id="mixed-70000"),
    pytest.param('{"type":"event","text":"naïve ✓ 🖨"}', id="json-mixed"),
]

# aiohttp picks its C reader when it was built with it; the pure-Python one is
# the fallback (AIOHTTP_NO_EXTENSIONS). Test whichever exist, each pairing its
# own queue class.
READERS = {"python": (aiohttp_reader_py.WebSocketReader, aiohttp_reader_py.WebSocketDataQueue)}
if aiohttp_reader.WebSocketReader is not aiohttp_reader_py.WebSocketReader:
    READERS["c"] = (aiohttp_reader.WebSocketReader, aiohttp_reader.WebSocketDataQueue)


async def _aiohttp_messages(data: bytes, flavour: str, chunk: int | None = None) -> list[str]:
    """Every text message aiohttp's frame reader makes of ``data`` (fed whole or in chunks)."""
    reader_cls, queue_cls = READERS[flavour]
    loop = asyncio.get_running_loop()
    queue = queue_cls(BaseProtocol(loop), 1 << 22, loop=loop)
    reader = reader_cls(queue, 1 << 22, compress=False, decode_text=True)
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        failed, rest = reader.feed_data(piece)
        assert not failed and rest == b""
    reader.feed_eof()
    texts: list[str] = []
    while True:
        try:
            msg = await queue.read()
        except aiohttp_reader_py.EofStream:
            return texts
        assert msg.type is WSMsgType.TEXT, msg
        texts.append(msg.data)


def _websockets_frames(data: bytes) -> list[Frame]:
    """Every frame the ``websockets`` library parses out of ``data``, which must be whole
    (a frame cut short raises EOFError)."""
    stream = StreamReader()
    stream.feed_data(data)
    stream.feed_eof()
    frames: list[Frame] = []
    while stream.buffer:
        parser = Frame.parse(stream.read_exact, mask=False)
        try:
            parser.send(None)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("websockets wants more bytes than the frame holds")
    return frames


@pytest.mark.parametrize("flavour", sorted(READERS))
@pytest.mark.parametrize("text", CASES)
async def test_aiohttp_reads_back_every_length_class(text: str, flavour: str) -> None:
    frame = text_frame(text)
    assert await _aiohttp_messages(frame, flavour) == [text]
    # Two frames back to back: a length off by one byte would misplace the second.
    assert await _aiohttp_messages(frame + text_frame(text + "x"), flavour) == [text, text + "x"]


@pytest.mark.parametrize("flavour", sorted(READERS))
@pytest.mark.parametrize("text", [_text(70000, "😀"), _text(126, "€"), _text(125, "é")])
async def test_aiohttp_reads_a_frame_split_across_reads(text: str, flavour: str) -> None:
    # Socket reads split anywhere, even inside the extended length or a character.
    frame = text_frame(text)
    assert await _aiohttp_messages(frame, flavour, chunk=3) == [text]


@pytest.mark.parametrize("text", CASES)
def test_websockets_parses_every_length_class_and_frames_it_alike(text: str) -> None:
    frame = text_frame(text)
    payload = text.encode("utf-8")
    parsed = _websockets_frames(frame + frame)
    assert len(parsed) == 2
    for got in parsed:
        assert got.opcode is Opcode.TEXT and got.fin
        assert not (got.rsv1 or got.rsv2 or got.rsv3)
        assert bytes(got.data) == payload
        assert bytes(got.data).decode("utf-8") == text
    # An independent encoder makes the very same bytes (shortest length form, no mask).
    assert Frame(Opcode.TEXT, payload).serialize(mask=False) == frame


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (1, b"\x81\x01"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (127, b"\x81\x7e\x00\x7f"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (70000, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70"),
    ],
)
def test_header_bytes_at_the_length_boundaries(length: int, header: bytes) -> None:
    # RFC 6455 5.2: FIN=1, RSV1-3=0, opcode 0x1 (text); MASK=0 (server to client);
    # payload length 0-125 in 7 bits, 126 + 16-bit length up to 65535, then
    # 127 + 64-bit length (most significant bit 0), network byte order, shortest form.
    text = _text(length, "a")
    frame = text_frame(text)
    assert frame[: len(header)] == header
    assert frame[len(header) :] == text.encode("ascii")
    assert frame[1] & 0x80 == 0


def test_the_length_counts_bytes_not_characters() -> None:
    text = "😀" * 32  # 32 characters, 128 bytes: the 16-bit form, not the 7-bit one
    assert text_frame(text)[:4] == b"\x81\x7e\x00\x80"


def test_one_frame_is_built_once_and_shared() -> None:
    text = '{"type":"event","n":1}'
    assert text_frame(text) is text_frame(text)


@dataclass
class _Transport:
    closing: bool = False
    buffered: int = 0
    written: list[bytes] = field(default_factory=list)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_direct_writer_writes_the_shared_frame_to_an_idle_socket() -> None:
    assert direct_writer(None) is None
    transport = _Transport(buffered=DIRECT_WRITE_LIMIT)
    write = direct_writer(transport)  # type: ignore[arg-type]
    assert write is not None
    assert write("é€😀") is True
    assert transport.written == [text_frame("é€😀")]


@pytest.mark.parametrize(
    "transport",
    [_Transport(closing=True), _Transport(buffered=DIRECT_WRITE_LIMIT + 1)],
    ids=["closing", "buffer-over-limit"],
)
def test_direct_writer_declines_a_closing_or_backed_up_socket(transport: _Transport) -> None:
    write = direct_writer(transport)  # type: ignore[arg-type]
    assert write is not None
    assert write("event") is False
    assert transport.written == []
