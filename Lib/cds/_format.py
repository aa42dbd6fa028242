"""Reading pycds archive files, as Doc/library/cds-format.rst describes
them, for ``python -m cds``.

Only the header, the module index and the string table are read: enough
to say what an archive is, whose it is and where its bytes go, without
mapping it in this process.  Whether this interpreter can use an archive
is for the interpreter to say (cds.check()).
"""

import os
import stat
import struct

MAGIC = b'PYCDS\r\n\x1a'
FORMAT_VERSION = 4
COMPLETE = 0x45544c504d4f43

# the object regions, in file order; modules have a range in all but 'str'
REGIONS = ('str', 'tup', 'code', 'warm', 'cold')
MODULE_REGIONS = REGIONS[1:]
REGION_TITLES = {
    'str': 'shared strings (interned identifiers)',
    'tup': 'tuples that hold identifiers',
    'code': 'code objects',
    'warm': 'other strings',
    'cold': 'bytes, numbers, other tuples',
}

HEADER = struct.Struct('<8sII32sQQQQQQQQQQ5Q5QQQqQQQ')
HEADER_FIELDS = (('magic', 'format_version', 'header_size', 'fingerprint',
                  'preferred_base', 'file_size', 'index_offset', 'module_count',
                  'strtab_offset', 'strtab_size', 'reloc_offset', 'reloc_count',
                  'fixup_offset', 'fixup_count')
                 + tuple(f'{r}_offset' for r in REGIONS)
                 + tuple(f'{r}_size' for r in REGIONS)
                 + ('seed_size', 'seed_checksum', 'optimize', 'index_checksum',
                    'header_checksum', 'complete'))
# the first fields, the same in every format version
PREFIX = struct.Struct('<8sII')

ENTRY = struct.Struct('<IIQQQqqQqqQ8QQQQQQQ')
ENTRY_FIELDS = (('kind', 'name_len', 'name_off', 'path_off', 'path_len',
                 'mtime_ns', 'size', 'source_hash', 'pyc_mtime_ns', 'pyc_size',
                 'code')
                + tuple(f'{r}_{end}' for r in MODULE_REGIONS
                        for end in ('start', 'end'))
                + ('reloc_start', 'reloc_count', 'fixup_start', 'fixup_count',
                   'checksum', 'reloc_checksum'))
KINDS = {1: 'source', 2: 'frozen', 3: 'regex', 4: 'string'}

M64 = (1 << 64) - 1
P1 = 0x9E3779B185EBCA87
P2 = 0xC2B2AE3D27D4EB4F

# the largest file read: archives are tens of megabytes
MAX_SIZE = 1 << 34


class ArchiveError(Exception):
    """The file is not an archive that can be read (the message says why)."""


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def checksum(data, h=0):
    """The archive's 64-bit checksum of 'data', continuing from 'h'."""
    data = bytes(data)
    n = len(data)
    padded = data + bytes(-n % 32 if n else 32)
    a = [h, h ^ P1, h ^ P2, ~h & M64]
    b = [0, 0, 0, 0]
    for i, (w,) in enumerate(struct.iter_unpack('<Q', padded)):
        lane = i % 4
        a[lane] = (a[lane] + w) & M64
        b[lane] = (b[lane] + a[lane]) & M64
    x = (n * P1) & M64
    for i in range(4):
        x = (_rotl(x ^ ((a[i] + _rotl(b[i], 23)) & M64), 31) * P2) & M64
    x ^= x >> 33
    x = (x * P1) & M64
    x ^= x >> 29
    return x


def read_header(data):
    return dict(zip(HEADER_FIELDS, HEADER.unpack_from(data, 0)))


def header_checksum(fields):
    f = dict(fields, header_checksum=0, complete=0)
    return checksum(HEADER.pack(*(f[k] for k in HEADER_FIELDS)))


def read_index(data):
    """The index entries, each a dict of ENTRY_FIELDS with 'kind' named
    and 'name' (str) and 'path' (bytes, None for a frozen module) read
    from the string table."""
    h = read_header(data)
    strtab = h['strtab_offset']
    entries = []
    for i in range(h['module_count']):
        e = dict(zip(ENTRY_FIELDS,
                     ENTRY.unpack_from(data, h['index_offset'] + i * ENTRY.size)))
        e['kind'] = KINDS.get(e['kind'], f'kind {e["kind"]}')
        e['name'] = bytes(data[strtab + e['name_off']:
                               strtab + e['name_off'] + e['name_len']]
                          ).decode('utf-8', 'surrogateescape')
        e['path'] = (bytes(data[strtab + e['path_off']:
                                strtab + e['path_off'] + e['path_len']])
                     if e['path_len'] else None)
        entries.append(e)
    return entries


def module_size(entry):
    """Bytes of a module's own objects (its ranges)."""
    return sum(entry[f'{r}_end'] - entry[f'{r}_start'] for r in MODULE_REGIONS)


def read_file(path):
    """The bytes of the archive at 'path'.  A special file (a FIFO, a
    device) is refused, never read or waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ArchiveError(f'cannot open: {exc.strerror}') from None
    with os.fdopen(fd, 'rb') as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError('not a regular file')
        if st.st_size > MAX_SIZE:
            raise ArchiveError(f'too large for an archive ({st.st_size} bytes)')
        try:
            return f.read()
        except OSError as exc:
            raise ArchiveError(f'cannot read: {exc.strerror}') from None


def parse(data):
    """Check what can be checked without the interpreter that made the
    archive; return its header.  ArchiveError says what is wrong, with
    the format version when the file is an archive of another version."""
    if len(data) < PREFIX.size:
        raise ArchiveError(f'not a pycds archive (only {len(data)} bytes)')
    magic, version, header_size = PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise ArchiveError('not a pycds archive (bad magic)')
    if version != FORMAT_VERSION or header_size != HEADER.size:
        raise ArchiveError(f'archive format version {version}; this '
                           f'interpreter reads version {FORMAT_VERSION} '
                           '(made by another pycds release)')
    if len(data) < HEADER.size:
        raise ArchiveError(f'truncated ({len(data)} bytes, shorter than '
                           'the header)')
    h = read_header(data)
    if h['complete'] != COMPLETE:
        raise ArchiveError('incomplete (the dump did not finish)')
    if header_checksum(h) != h['header_checksum']:
        raise ArchiveError('damaged (header checksum mismatch)')
    if h['file_size'] != len(data):
        what = 'truncated' if len(data) < h['file_size'] else 'damaged'
        raise ArchiveError(f'{what} ({len(data)} bytes; the header says '
                           f'{h["file_size"]})')
    tables = [('index', h['index_offset'], h['module_count'] * ENTRY.size),
              ('string table', h['strtab_offset'], h['strtab_size']),
              ('relocations', h['reloc_offset'], 8 * h['reloc_count']),
              ('fixups', h['fixup_offset'], 8 * h['fixup_count'])]
    tables += [(f'region {r}', h[f'{r}_offset'], h[f'{r}_size'])
               for r in REGIONS]
    for name, offset, size in tables:
        if offset > len(data) or size > len(data) - offset:
            raise ArchiveError(f'damaged ({name} outside the file)')
    idx = data[h['index_offset']:h['index_offset'] + h['module_count'] * ENTRY.size]
    strtab = data[h['strtab_offset']:h['strtab_offset'] + h['strtab_size']]
    if checksum(strtab, checksum(idx)) != h['index_checksum']:
        raise ArchiveError('damaged (index checksum mismatch)')
    for e in read_index(data):
        if (e['kind'] not in KINDS.values()
                or e['name_off'] + e['name_len'] > h['strtab_size']
                or e['path_off'] + e['path_len'] > h['strtab_size']
                or any(not (0 < e[f'{r}_start'] <= e[f'{r}_end'] <= len(data))
                       for r in MODULE_REGIONS)):
            raise ArchiveError('damaged (bad index entry)')
    return h
