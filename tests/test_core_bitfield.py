"""Bitfield: hypercore's page layout and the range queries the core and replicator use."""

import pytest

from hyperfs.core.bitfield import BITS_PER_PAGE, BYTES_PER_PAGE, Bitfield
from hyperfs.errors import CorruptStorageError


def test_page_layout_is_little_endian_words():
    bf = Bitfield()
    bf.set(0)
    bf.set(9)
    bf.set(31)
    bf.set(BITS_PER_PAGE + 3)
    pages = dict(bf.take_dirty())
    assert sorted(pages) == [0, 1]
    assert pages[0][:4] == bytes([0b1, 0b10, 0, 0b10000000])  # Uint32 word 0 = 0x80000201
    assert pages[1][0] == 0b1000 and len(pages[0]) == BYTES_PER_PAGE
    assert bf.take_dirty() == []


def test_ranges_across_pages():
    bf = Bitfield()
    bf.set_range(5, 3 * BITS_PER_PAGE + 7)
    bf.set_range(100, 200, False)
    bf.set(5 * BITS_PER_PAGE)
    assert list(bf.ranges()) == [(5, 100), (200, 3 * BITS_PER_PAGE + 7), (5 * BITS_PER_PAGE, 5 * BITS_PER_PAGE + 1)]
    assert list(bf.ranges(150)) == [(200, 3 * BITS_PER_PAGE + 7), (5 * BITS_PER_PAGE, 5 * BITS_PER_PAGE + 1)]
    assert bf.first_unset(0) == 0 and bf.first_unset(5) == 100 and bf.first_unset(200) == 3 * BITS_PER_PAGE + 7
    assert bf.first_set(0) == 5 and bf.first_set(100) == 200
    assert bf.first_set(5 * BITS_PER_PAGE + 1) is None
    assert bf.has_all(5, 100) and not bf.has_all(5, 101) and bf.has_all(7, 7)
    assert bf.get(BITS_PER_PAGE) and not bf.get(150)


def test_reload_from_pages():
    bf = Bitfield()
    bf.set_range(3, 40000)
    again = Bitfield(bf.take_dirty())
    assert list(again.ranges()) == [(3, 40000)]
    with pytest.raises(CorruptStorageError):
        Bitfield([(0, b"short")])
