"""Which blocks of a core are stored: a bitmap kept in 4096-byte pages (hypercore `lib/bitfield.js`).

Page `p` holds blocks `[p * 32768, (p + 1) * 32768)`; block `i` is bit `i & 7` (LSB first) of
byte `(i % 32768) >> 3`, the bytes of hypercore's little-endian Uint32Array words. The pages are
what hypercore-storage keeps under DATA_BITFIELD, so `dirty pages` go into the same write batch
as the blocks they describe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hyperfs.errors import CorruptStorageError

BYTES_PER_PAGE = 4096
BITS_PER_PAGE = BYTES_PER_PAGE * 8
_FULL = b"\xff" * BYTES_PER_PAGE


class Bitfield:
    """The in-memory bitmap of stored blocks, with the set of pages changed since `take_dirty`."""

    def __init__(self, pages: Iterable[tuple[int, bytes]] = ()) -> None:
        self._pages: dict[int, bytearray] = {}
        self._dirty: set[int] = set()
        for index, page in pages:
            if len(page) != BYTES_PER_PAGE:
                raise CorruptStorageError(
                    f"bitfield page {index} is {len(page)} bytes, expected {BYTES_PER_PAGE}"
                )
            self._pages[index] = bytearray(page)

    def page(self, index: int) -> bytes | None:
        """Page `index` as stored, or None if no block in it was ever stored."""
        page = self._pages.get(index)
        return bytes(page) if page is not None else None

    def load_page(self, index: int, page: bytes) -> None:
        self._pages[index] = bytearray(page)

    def get(self, index: int) -> bool:
        page = self._pages.get(index // BITS_PER_PAGE)
        if page is None:
            return False
        bit = index % BITS_PER_PAGE
        return bool(page[bit >> 3] >> (bit & 7) & 1)

    def set(self, index: int, value: bool = True) -> None:
        self.set_range(index, index + 1, value)

    def set_range(self, start: int, end: int, value: bool = True) -> None:
        """Set (or clear) the bits of blocks [start, end)."""
        while start < end:
            p = start // BITS_PER_PAGE
            page = self._pages.get(p)
            if page is None:
                if not value:
                    start = (p + 1) * BITS_PER_PAGE
                    continue
                page = self._pages[p] = bytearray(BYTES_PER_PAGE)
            lo = start - p * BITS_PER_PAGE
            hi = min(end - p * BITS_PER_PAGE, BITS_PER_PAGE)
            _set_bits(page, lo, hi, value)
            self._dirty.add(p)
            start = p * BITS_PER_PAGE + hi

    def first_unset(self, start: int = 0) -> int:
        """The lowest block index >= start whose bit is clear."""
        i = start
        while True:
            p = i // BITS_PER_PAGE
            page = self._pages.get(p)
            if page is None:
                return i
            lo = i - p * BITS_PER_PAGE
            if page == _FULL:
                i = (p + 1) * BITS_PER_PAGE
                continue
            found = _scan(page, lo, False)
            if found is not None:
                return p * BITS_PER_PAGE + found
            i = (p + 1) * BITS_PER_PAGE

    def first_set(self, start: int = 0) -> int | None:
        """The lowest block index >= start whose bit is set, or None."""
        for p in sorted(q for q in self._pages if q >= start // BITS_PER_PAGE):
            lo = max(start - p * BITS_PER_PAGE, 0)
            found = _scan(self._pages[p], lo, True)
            if found is not None:
                return p * BITS_PER_PAGE + found
        return None

    def ranges(self, start: int = 0) -> Iterator[tuple[int, int]]:
        """The stored runs [s, e) at or after `start`, in order."""
        i = start
        while True:
            s = self.first_set(i)
            if s is None:
                return
            e = self.first_unset(s)
            yield s, e
            i = e

    def has_all(self, start: int, end: int) -> bool:
        return start >= end or self.first_unset(start) >= end

    def take_dirty(self) -> list[tuple[int, bytes]]:
        """The pages changed since the last call (to store), as (page index, bytes)."""
        out = [(p, bytes(self._pages[p])) for p in sorted(self._dirty)]
        self._dirty.clear()
        return out


def _set_bits(page: bytearray, lo: int, hi: int, value: bool) -> None:
    # Whole bytes in one slice assignment; only the ragged ends bit by bit.
    while lo < hi and lo & 7:
        _set_bit(page, lo, value)
        lo += 1
    while hi > lo and hi & 7:
        hi -= 1
        _set_bit(page, hi, value)
    if lo < hi:
        page[lo >> 3 : hi >> 3] = (b"\xff" if value else b"\x00") * ((hi - lo) >> 3)


def _set_bit(page: bytearray, bit: int, value: bool) -> None:
    if value:
        page[bit >> 3] |= 1 << (bit & 7)
    else:
        page[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF


def _scan(page: bytearray, lo: int, want: bool) -> int | None:
    """The first bit >= lo equal to `want` in one page, or None."""
    skip = 0x00 if want else 0xFF
    byte = lo >> 3
    # The partial first byte.
    for bit in range(lo, min((byte + 1) * 8, BITS_PER_PAGE)):
        if bool(page[bit >> 3] >> (bit & 7) & 1) == want:
            return bit
    byte += 1
    # C-speed skip over the bytes that are all `skip` bits.
    byte += (BYTES_PER_PAGE - byte) - len(page[byte:].lstrip(bytes((skip,))))
    if byte < BYTES_PER_PAGE:
        value = page[byte] if want else ~page[byte] & 0xFF
        return byte * 8 + ((value & -value).bit_length() - 1)
    return None
