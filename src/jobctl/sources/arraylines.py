"""A top-level JSON array laid out one element per line, parsed a block of lines at a time.

Open-data dumps are usually written ``[\\n{...},\\n{...},\\n…\\n{...}\\n]\\n``. For such a
feed :class:`ArrayLines` gives exactly what ijson's ``items(reader, "item",
use_float=False, buf_size=READ_SIZE)`` gives — the same elements, the same numbers
(``int`` of any size, ``Decimal`` for a fraction or an exponent, as written), the same
exception with the same message and byte offset — at about a third of the CPU:

* it reads the stream as ijson would (``read(READ_SIZE)`` on the same reader: the same
  bytes at the same offsets, the feed's digest taken on the way), and after each read
  parses the lines that ended in it, from the last element boundary up to the last line
  that ends in a comma, as one array with msgspec (``[`` + lines − the comma + ``]``,
  ``float_hook=Decimal``: the exact number as written, as ijson). A comma at the end of
  a line is not always the end of an element (a pretty-printed object has them too);
  when it is not, or the lines are not valid JSON, msgspec refuses the block;
* whatever the fast path does not take — another layout (no ``[`` alone on the first
  line), a block msgspec refuses, a line longer than :data:`LINE_LIMIT`, the last
  element and the closing ``]``, the end of the stream, a read that fails — goes to
  ijson, which is handed the very chunks it would have read, from the chunk where the
  unparsed text starts (the part of that chunk before it is prefixed by text that puts
  yajl in the state it was in there: ``[0,`` after an element, nothing at the start).
  ijson then yields, raises and reports offsets as it would have on the whole stream;
  the elements the fast path already gave are skipped, so none is lost or repeated.
  It goes on with ijson to the end: a feed that changes layout midway is slower after
  the change, never different.

The hand-over relies on msgspec being the stricter parser: every block it accepts,
yajl accepts with the same values (both keep the last of duplicate keys, in the
first one's place; msgspec refuses lone surrogate escapes, invalid UTF-8, ``NaN``,
integers of more than 4300 digits, where yajl errs or differs). The property test in
``tests/unit/test_arraylines.py`` checks this on random documents and cuts.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from decimal import Decimal
from types import ModuleType
from typing import Any, Protocol

import msgspec

__all__ = ["LINE_LIMIT", "READ_SIZE", "ArrayLines"]

READ_SIZE = 1 << 16  # what ijson reads at a time (the caller's buf_size): 64 KiB
LINE_LIMIT = 1 << 20  # unparsed text beyond this without a comma line: ijson takes over
_HEADER = re.compile(rb"[ \t\r\n]*\[[ \t\r]*\n")  # "[" alone on the first line
_SPACE = b" \t\r"
_COMMA = ord(",")
_AFTER_ELEMENT = b"[0,"  # puts yajl after an element of the top-level array: one to skip
_decode = msgspec.json.Decoder(float_hook=Decimal).decode
_REFUSED = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError)


class ChunkReader(Protocol):
    """What ijson reads from: ``read(size)``, and the offset reached in the raw stream."""

    offset: int

    def read(self, size: int = -1, /) -> bytes: ...


# (data offset of its first byte, the bytes, raw offset before it, raw offset after it)
_Chunk = tuple[int, bytes, int, int]
# (data offset, text that puts yajl in the state it is in there, elements before it)
_Checkpoint = tuple[int, bytes, int]


class _Replay:
    """A reader that serves ``pieces`` (bytes, the raw offset after them), then ends as
    the stream did (``end``: True at its end, an exception if a read raised it) or, with
    ``end`` None, reads on from ``reader``."""

    def __init__(
        self, pieces: deque[tuple[bytes, int]], reader: ChunkReader, end: bool | Exception | None
    ) -> None:
        self._pieces = pieces
        self._reader = reader
        self._end = end
        self.offset = reader.offset

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:  # ijson's check that the stream gives bytes
            return b""
        if self._pieces:
            data, self.offset = self._pieces.popleft()
            return data
        if self._end is True:
            return b""
        if isinstance(self._end, Exception):
            raise self._end
        data = self._reader.read(size)
        self.offset = self._reader.offset
        return data


def _last_separator(data: bytes, lead: int) -> int:
    """Index of the comma that ends one of the last lines of ``data[lead:]``, or -1."""
    end = len(data)
    for _ in range(4):  # the last element, "]" and a blank line come after the last one
        newline = data.rfind(b"\n", lead, end)
        if newline < 0:
            return -1
        i = newline - 1
        while i >= lead and data[i] in _SPACE:
            i -= 1
        if i >= lead and data[i] == _COMMA:
            return i
        end = newline
    return -1


def _forget(chunks: deque[_Chunk], checkpoints: list[_Checkpoint], pos: int) -> None:
    """Drop what no hand-over at ``pos`` or later needs: the checkpoints before the last one
    at or before the start of the chunk holding ``pos``, the chunks before that one."""
    boundary = next(chunk[0] for chunk in reversed(chunks) if chunk[0] <= pos)
    while len(checkpoints) > 1 and checkpoints[1][0] <= boundary:
        del checkpoints[0]
    while chunks[0][0] + len(chunks[0][1]) <= checkpoints[0][0]:
        chunks.popleft()


class ArrayLines:
    """The elements of the top-level JSON array read from ``reader``, as ijson's
    ``backend.items(reader, "item", use_float=False, buf_size=READ_SIZE)`` gives them.

    ``offset`` is the raw offset that ijson's reader would be at: what a
    ``JSONError`` raised while iterating reports. ``fast`` counts the elements parsed
    a block at a time (the rest came from ijson). ``read_size`` is ijson's
    ``buf_size``; ``line_limit`` how much unparsed text may wait for a comma line.
    """

    def __init__(
        self,
        reader: ChunkReader,
        backend: ModuleType,
        *,
        read_size: int = READ_SIZE,
        line_limit: int = LINE_LIMIT,
    ) -> None:
        self._reader = reader
        self._backend = backend
        self._read_size = read_size
        self._line_limit = line_limit
        self._source: ChunkReader = reader
        self.fast = 0

    @property
    def offset(self) -> int:
        return self._source.offset

    def __iter__(self) -> Iterator[Any]:
        reader = self._reader
        data = reader.read(self._read_size)
        chunks: deque[_Chunk] = deque([(0, data, 0, reader.offset)])
        checkpoints: list[_Checkpoint] = [(0, b"", 0)]  # the document's start
        header = _HEADER.match(data)
        if header is None:  # another layout: all of it through ijson
            yield from self._ijson(chunks, checkpoints, 0, 0, None)
            return
        pos = header.end()  # the first byte not parsed yet: where an element starts
        count = 0  # elements given
        start = 0  # data offset of ``data``
        lead = pos  # where the unparsed text starts in ``data``
        tail = b""  # the unparsed text before ``data``
        end: bool | Exception | None = None
        while True:
            text: tuple[bytes | memoryview, ...] = ()
            sep = _last_separator(data, lead)
            if sep >= 0:
                text, rest, after = (tail, memoryview(data)[lead:sep]), data[sep + 1 :], start + sep
            else:  # no comma line ends in this chunk: one may end across the chunks since pos
                tail += data[lead:]
                sep = _last_separator(tail, 0)
                if sep >= 0:
                    text, rest, after = (memoryview(tail)[:sep],), tail[sep + 1 :], pos + sep
                elif len(tail) > self._line_limit:
                    break
            if text:
                try:
                    items = _decode(b"".join((b"[", *text, b"]")))
                except _REFUSED:
                    items = None
                if not items:  # refused, or no element before the comma (invalid)
                    break
                count += len(items)
                self.fast += len(items)
                yield from items
                pos, tail = after + 1, rest
                checkpoints.append((pos, _AFTER_ELEMENT, count))
                _forget(chunks, checkpoints, pos)
            lead = 0
            start += len(data)
            before = reader.offset
            try:
                data = reader.read(self._read_size)
            except Exception as exc:  # ijson hands it on when it gets there
                end = exc
                break
            if not data:
                end = True
                break
            chunks.append((start, data, before, reader.offset))
        yield from self._ijson(chunks, checkpoints, pos, count, end)

    def _ijson(
        self,
        chunks: deque[_Chunk],
        checkpoints: list[_Checkpoint],
        pos: int,
        count: int,
        end: bool | Exception | None,
    ) -> Iterator[Any]:
        """ijson from the chunk holding ``pos`` on, skipping the ``count`` elements given."""
        last_start, last, _, boundary_raw = chunks[-1]
        boundary = last_start + len(last)  # pos at the very end: the next read's chunk
        for chunk_start, chunk, raw_start, _ in chunks:
            if chunk_start <= pos < chunk_start + len(chunk):
                boundary, boundary_raw = chunk_start, raw_start
                break
        at, state, before = next(c for c in reversed(checkpoints) if c[0] <= boundary)
        lead = b"".join(
            memoryview(chunk)[max(at - s, 0) : boundary - s]
            for s, chunk, _, _ in chunks
            if s < boundary and s + len(chunk) > at
        )
        pieces: deque[tuple[bytes, int]] = deque()
        if state or lead:
            pieces.append((state + lead, boundary_raw))
        pieces.extend((chunk, raw_end) for s, chunk, _, raw_end in chunks if s >= boundary)
        replay = _Replay(pieces, self._reader, end)
        self._source = replay
        skip = count - before + (1 if state else 0)
        for item in self._backend.items(replay, "item", use_float=False, buf_size=self._read_size):
            if skip:
                skip -= 1
                continue
            yield item
