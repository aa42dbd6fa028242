"""An independent reader of the pycds archive format, for the tests.

Written from Doc/library/cds-format.rst, not from the C sources, so that
the tests check the format as documented.  The tool's reader
(Lib/cds/_format.py) has the header and the index; this adds what the
tests check and change: relocations, fixups, module checksums.
"""

import struct

# the layout, the checksum and the index reader are the tool's
# (Lib/cds/_format.py, also written from the documentation)
from cds._format import (  # noqa: F401
    MAGIC, FORMAT_VERSION, COMPLETE, REGIONS, MODULE_REGIONS, HEADER,
    HEADER_FIELDS, ENTRY, ENTRY_FIELDS, KINDS, M64, P1, P2, _rotl, checksum,
    read_header, header_checksum, read_index)

PAGE = 4096


class _FixupWord:
    """A fixup: one 64-bit word, offset | kind, read and written as the
    pair (offset, kind)."""
    size = 8

    def iter_unpack(self, data):
        for (w,) in struct.iter_unpack('<Q', data):
            yield w & ~7, w & 7

    def unpack_from(self, data, offset=0):
        w = struct.unpack_from('<Q', data, offset)[0]
        return w & ~7, w & 7

    def pack(self, off, kind):
        return struct.pack('<Q', (off & ~7 | kind) & (1 << 64) - 1)

    def pack_into(self, data, at, off, kind):
        struct.pack_into('<Q', data, at, (off & ~7 | kind) & (1 << 64) - 1)


FIXUP = _FixupWord()
FIXUP_KINDS = {1: 'intern', 2: 'frozenset', 3: 'code'}


def set_header(data, **changes):
    """Return 'data' with header fields changed and the checksum redone."""
    h = read_header(data)
    h.update(changes)
    h['header_checksum'] = header_checksum(h)
    return HEADER.pack(*(h[k] for k in HEADER_FIELDS)) + bytes(data[HEADER.size:])


def reloc_runs(entry):
    """Each range's run of relocation bits: (range, start, end, first
    word of the run in the module's bitmap, words); bit i of a run marks
    the 8-byte word at (start & ~7) + 8 i."""
    runs, word = [], 0
    for r in MODULE_REGIONS:
        start, end = entry[f'{r}_start'], entry[f'{r}_end']
        n = ((end - (start & ~7)) // 8 + 63) // 64 if end >= start else 0
        runs.append((r, start, end, word, n))
        word += n
    return runs


def reloc_words(data, entry):
    h = read_header(data)
    start = h['reloc_offset'] + 8 * entry['reloc_start']
    return [w for (w,) in struct.iter_unpack(
        '<Q', data[start:start + 8 * entry['reloc_count']])]


def relocations(data, entry):
    """The module's pointer slots, ascending, as offset | 1 for a pointer
    into the interpreter image and offset | 0 for one into the archive (the
    slot's value says which); bits past a range's end are included."""
    h = read_header(data)
    words = reloc_words(data, entry)
    slots = []
    for r, start, end, first, n in reloc_runs(entry):
        for k, w in enumerate(words[first:first + n]):
            while w:
                b = (w & -w).bit_length() - 1
                w &= w - 1
                off = (start & ~7) + 8 * (64 * k + b)
                try:
                    v = struct.unpack_from('<Q', data, off)[0]
                except struct.error:
                    v = 0
                image = not (0 <= v - h['preferred_base'] < h['file_size'])
                slots.append(off | image)
    return slots


def encode_relocations(entry, slots):
    """The bitmap words of these slots (offset | kind: the kind is not
    stored); slots that no run of the module covers are left out."""
    runs = reloc_runs(entry)
    words = [0] * (runs[-1][3] + runs[-1][4])
    for s in slots:
        off = s & ~7
        for r, start, end, first, n in runs:
            bit = (off - (start & ~7)) // 8
            if 0 <= bit < 64 * n and off >= (start & ~7):
                words[first + bit // 64] |= 1 << (bit % 64)
                break
    return words


def fixups(data, entry):
    h = read_header(data)
    start = h['fixup_offset'] + FIXUP.size * entry['fixup_start']
    return [(off, FIXUP_KINDS[kind]) for off, kind in FIXUP.iter_unpack(
        data[start:start + FIXUP.size * entry['fixup_count']])]


def source_hash(source):
    """The 'source_hash' an entry records for the source bytes 'source':
    the keyed hash of a hash-based .pyc, as a little-endian integer."""
    import importlib.util
    return int.from_bytes(importlib.util.source_hash(source), 'little')


def in_module(entry, offset, size=0):
    return any(entry[f'{r}_start'] <= offset
               and offset + size <= entry[f'{r}_end']
               and offset < entry[f'{r}_end']
               for r in MODULE_REGIONS)


# str object layout (64-bit): ob_refcnt, ob_type, length, hash, state (4
# bytes, padded to 8); a non-ASCII string has utf8_length and utf8 after it
ASCII_HEADER = 40
COMPACT_HEADER = 56


def string_digest(data, offset, h):
    length, = struct.unpack_from('<q', data, offset + 16)
    state, = struct.unpack_from('<I', data, offset + 32)
    kind = (state >> 2) & 7
    ascii = (state >> 6) & 1
    start = offset + (ASCII_HEADER if ascii else COMPACT_HEADER)
    chars = bytes(data[start:start + length * kind])
    x = (_rotl(h ^ (kind | (ascii << 8)), 17) * P1) & M64
    whole = len(chars) - len(chars) % 8
    for (w,) in struct.iter_unpack('<Q', chars[:whole]):
        x = (_rotl(x ^ w, 29) * P2) & M64
    tail = int.from_bytes(chars[whole:], 'little')
    x = (_rotl(x ^ tail ^ ((len(chars) << 56) & M64), 29) * P2) & M64
    return x ^ (x >> 31)


def module_checksum(data, entry):
    h = read_header(data)
    c = 0
    for r in MODULE_REGIONS:
        c = checksum(data[entry[f'{r}_start']:entry[f'{r}_end']], c)
    fs = h['fixup_offset'] + FIXUP.size * entry['fixup_start']
    c = checksum(data[fs:fs + FIXUP.size * entry['fixup_count']], c)
    previous = None
    for off, kind in fixups(data, entry):
        if kind == 'intern':
            target, = struct.unpack_from('<Q', data, off)
            if target != previous:
                c = string_digest(data, target - h['preferred_base'], c)
                previous = target
    return c


def validate(data):
    """Check an archive as SHARE does; return a list of problems."""
    problems = []
    h = read_header(data)
    if h['magic'] != MAGIC:
        return ['bad magic']
    if h['format_version'] != FORMAT_VERSION:
        return ['format version']
    if h['complete'] != COMPLETE:
        problems.append('incomplete')
    if header_checksum(h) != h['header_checksum']:
        problems.append('header checksum')
    if h['file_size'] != len(data):
        problems.append('file size')
    idx = data[h['index_offset']:h['index_offset'] + h['module_count'] * ENTRY.size]
    strtab = data[h['strtab_offset']:h['strtab_offset'] + h['strtab_size']]
    if checksum(strtab, checksum(idx)) != h['index_checksum']:
        problems.append('index checksum')
    seed = data[h['str_offset']:h['str_offset'] + h['seed_size']]
    if checksum(seed) != h['seed_checksum']:
        problems.append('seed checksum')
    for e in read_index(data):
        if module_checksum(data, e) != e['checksum']:
            problems.append(f"{e['name']}: checksum")
        rs = h['reloc_offset'] + 8 * e['reloc_start']
        if checksum(data[rs:rs + 8 * e['reloc_count']]) != e['reloc_checksum']:
            problems.append(f"{e['name']}: relocations checksum")
        runs = reloc_runs(e)
        if e['reloc_count'] != runs[-1][3] + runs[-1][4]:
            problems.append(f"{e['name']}: relocation bitmap size")
        for r in relocations(data, e):
            if not in_module(e, r & ~1, 8):
                problems.append(f"{e['name']}: relocation outside the module")
        for off, kind in fixups(data, e):
            if kind == 'intern':
                target = struct.unpack_from('<Q', data, off)[0] - h['preferred_base']
                if not (h['str_offset'] <= target < h['str_offset'] + h['str_size']):
                    problems.append(f"{e['name']}: interned string outside "
                                    "the string region")
    return problems
