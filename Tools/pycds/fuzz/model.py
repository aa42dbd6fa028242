"""The baseline archive: its layout (from format.py, read at run time, and
the object layouts of CPython 3.13 checked on the archive), what it holds
(modules, records, objects and how strongly the checks cover each), and
the checksums the fuzzer redoes."""

import bisect
import heapq
import importlib.util
import os
import struct

M64 = (1 << 64) - 1

# Object layouts of CPython 3.13 on 64-bit Linux (the only platform that
# archives; format.py's string layout comments say the same).  These are
# not in format.py; Model.check_layouts() verifies them on the archive.
OB_REFCNT, OB_TYPE, OB_SIZE = 0, 8, 16
GC_HEAD = 16                      # a tuple's PyGC_Head, before it
TUPLE_ITEMS = 24                  # ob_item[0] of a tuple
STR_LENGTH, STR_HASH, STR_STATE = 16, 24, 32
STR_UTF8_LENGTH, STR_UTF8 = 40, 48          # compact non-ASCII only
# state bits of PyASCIIObject
ST_INTERNED, ST_KIND_SHIFT, ST_COMPACT, ST_ASCII, ST_STATIC = (
    0x3, 2, 1 << 5, 1 << 6, 1 << 7)
# PyCodeObject (Include/cpython/code.h): (offset, size, role).  'ptr': a
# pointer with a relocation record; 'derived': an int the interpreter
# computes (a .pyc does not carry it); 'runtime': zero in the archive,
# set by a running process; 'check': read to verify the layout only
# (a .pyc carries it: never mutated).
CODE_FIELDS = {
    'co_consts': (24, 8, 'ptr'),
    'co_names': (32, 8, 'ptr'),
    'co_exceptiontable': (40, 8, 'ptr'),
    'co_stacksize': (64, 4, 'check'),
    'co_nlocalsplus': (72, 4, 'derived'),
    'co_framesize': (76, 4, 'derived'),
    'co_nlocals': (80, 4, 'derived'),
    'co_ncellvars': (84, 4, 'derived'),
    'co_nfreevars': (88, 4, 'derived'),
    'co_version': (92, 4, 'derived'),
    'co_localsplusnames': (96, 8, 'ptr'),
    'co_localspluskinds': (104, 8, 'ptr'),
    'co_filename': (112, 8, 'ptr'),
    'co_name': (120, 8, 'ptr'),
    'co_qualname': (128, 8, 'ptr'),
    'co_linetable': (136, 8, 'ptr'),
    'co_weakreflist': (144, 8, 'runtime'),
    'co_executors': (152, 8, 'runtime'),
    '_co_cached': (160, 8, 'runtime'),
    '_co_instrumentation_version': (168, 8, 'runtime'),
    '_co_monitoring': (176, 8, 'runtime'),
    '_co_firsttraceable': (184, 4, 'derived'),
    'co_extra': (192, 8, 'runtime'),
}

# How strongly the documented checks of share mode cover an object or a
# slot (Doc/library/cds-format.rst, validation rules): 'default', checked
# in every run (code objects, their direct fields, each name and constant
# at any depth, shared strings, frozenset tuples and their items);
# 'verify', only under -X cds_verify (canonical forms of values: nothing
# the fuzzer mutates); 'trusted', never (content: which object a constant
# is, the bytecode's length).  A crash whose
# mutations the checks do not cover with the run's options is reported as
# 'unchecked', not as a crash.
LEVELS = ('default', 'verify', 'trusted')


# -- the archive's layout, from format.py -------------------------------------

def load_format(path):
    """The format reader: test.test_cds.format, or the file 'path'."""
    if path is None:
        from test.test_cds import format as cdsformat
        return cdsformat
    spec = importlib.util.spec_from_file_location('_fuzz_format', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def struct_fields(st, names):
    """{name: (offset, size)} of the fields of the struct.Struct 'st',
    found by packing each field alone: no offset is written here."""
    zero = st.unpack(bytes(st.size))
    if len(zero) != len(names):
        raise ValueError(f'{len(names)} names for {len(zero)} fields')
    layout = {}
    for i, name in enumerate(names):
        if isinstance(zero[i], bytes):
            markers = [b'\xff' * len(zero[i])]
        else:
            markers = [-1, M64, (1 << 32) - 1, (1 << 16) - 1, 255]
        for marker in markers:
            values = list(zero)
            values[i] = marker
            try:
                packed = st.pack(*values)
            except struct.error:
                continue
            nonzero = [k for k, b in enumerate(packed) if b]
            layout[name] = (nonzero[0], nonzero[-1] + 1 - nonzero[0])
            break
    return layout


def get(data, off, size=8, signed=False):
    if off < 0 or off + size > len(data):
        return 0
    return int.from_bytes(data[off:off + size], 'little', signed=signed)


def put(data, off, value, size=8):
    """Write 'value' (wrapped to 'size' bytes) if it fits in 'data'."""
    if 0 <= off and off + size <= len(data):
        data[off:off + size] = (value & ((1 << 8 * size) - 1)).to_bytes(
            size, 'little')


def code_int(data, c, name):
    """The int field 'name' of the code object at 'c'."""
    off, size, role = CODE_FIELDS[name]
    return get(data, c + off, size, True)


class Model:
    """The baseline archive, parsed once: what the mutations pick from."""

    def __init__(self, fmt, data, app_dir):
        self.fmt = fmt
        self.data = bytes(data)
        self.size = len(data)
        self.hf = struct_fields(fmt.HEADER, fmt.HEADER_FIELDS)
        self.ef = struct_fields(fmt.ENTRY, fmt.ENTRY_FIELDS)
        self.h = fmt.read_header(data)
        self.base = self.h['preferred_base']
        self.warnings = []
        self.entries = [self.read_entry(data, i)
                        for i in range(self.h['module_count'])]
        self.names = [self.entry_name(data, e) for e in self.entries]
        app_dir = os.fsencode(app_dir)
        self.app_modules = [i for i, e in enumerate(self.entries)
                            if self.entry_path(data, e).startswith(app_dir)]
        self.parse_records()
        self.parse_objects()
        self.check_layouts()
        self.parse_seed()
        self.parse_levels()

    # -- raw access, tolerant of any value (no KINDS lookups) --

    def read_entry(self, data, i):
        off = self.h['index_offset'] + i * self.fmt.ENTRY.size
        return dict(zip(self.fmt.ENTRY_FIELDS,
                        self.fmt.ENTRY.unpack_from(data, off)))

    def entry_offset(self, i):
        return self.h['index_offset'] + i * self.fmt.ENTRY.size

    def entry_name(self, data, e):
        s = self.h['strtab_offset'] + e['name_off']
        return bytes(data[s:s + e['name_len']]).decode('utf-8', 'replace')

    def entry_path(self, data, e):
        s = self.h['strtab_offset'] + e['path_off']
        return bytes(data[s:s + e['path_len']])

    def ranges(self, e):
        return [(r, e[f'{r}_start'], e[f'{r}_end'])
                for r in self.fmt.MODULE_REGIONS]

    def relocs(self, data, e):
        """The module's relocations as records (slot offset | 1 if it
        points into the image), decoded from its bitmap."""
        return self.fmt.relocations(data, e)

    def fixups(self, data, e):
        fx = self.fmt.FIXUP
        start = self.h['fixup_offset'] + fx.size * e['fixup_start']
        return list(fx.iter_unpack(
            data[start:start + fx.size * e['fixup_count']]))

    def fixup_kind(self, name):
        return next(k for k, v in self.fmt.FIXUP_KINDS.items() if v == name)

    # -- what the archive holds --

    def parse_records(self):
        """Every relocation (pointer slot) and fixup, by module."""
        self.slots = []          # per module: [(slot offset, target bit)]
        self.fixup_lists = []
        intern = self.fixup_kind('intern')
        self.interners = {}      # shared string offset -> modules
        spans = []
        for i, e in enumerate(self.entries):
            self.slots.append([(w & ~7, w & 1)
                               for w in self.relocs(self.data, e)])
            fx = self.fixups(self.data, e)
            self.fixup_lists.append(fx)
            for off, kind in fx:
                if kind == intern:
                    t = get(self.data, off) - self.base
                    self.interners.setdefault(t, set()).add(i)
            for r, lo, hi in self.ranges(e):
                if hi > lo:
                    spans.append((lo, hi, i))
        spans.sort()
        self.span_starts = [s[0] for s in spans]
        self.spans = spans
        self.image_values = sorted({get(self.data, s)
                                    for slots in self.slots
                                    for s, k in slots if k == 1})

    def owner(self, off):
        """The module whose range holds file offset 'off', or None."""
        k = bisect.bisect_right(self.span_starts, off) - 1
        if k >= 0 and self.spans[k][0] <= off < self.spans[k][1]:
            return self.spans[k][2]
        return None

    def region_of(self, off):
        for r in self.fmt.REGIONS:
            lo = self.h[f'{r}_offset']
            if lo <= off < lo + self.h[f'{r}_size']:
                return r
        return None

    def parse_objects(self):
        """The objects pointer slots target, and their types."""
        targets = set()
        for slots in self.slots:
            for s, k in slots:
                if k == 0:
                    t = get(self.data, s) - self.base
                    if 0 <= t < self.size:
                        targets.add(t)
        targets.update(e['code'] for e in self.entries)
        self.objects = sorted(targets)
        self.type_of = {t: get(self.data, t + OB_TYPE) for t in self.objects}
        self.types = {}
        self.types['code'] = self.type_of[self.entries[0]['code']]
        if self.interners:
            self.types['str'] = get(self.data, next(iter(self.interners))
                                    + OB_TYPE)
        frozenset_kind = self.fixup_kind('frozenset')
        for fx in self.fixup_lists:
            for off, kind in fx:
                if kind == frozenset_kind:
                    self.types['tuple'] = self.type_of.get(
                        get(self.data, off) - self.base)
        self.type_names = {v: k for k, v in self.types.items()
                           if v is not None}
        self.by_module = {}
        for t in self.objects:
            self.by_module.setdefault(self.owner(t), []).append(t)
        self.by_type = {}
        for t in self.objects:
            self.by_type.setdefault(self.type_of[t], []).append(t)
        self.strings = self.by_type.get(self.types.get('str'), [])
        self.codes = self.by_type[self.types['code']]

    def check_layouts(self):
        """Check the object layouts above on the archive; turn off what
        relies on one that does not hold."""
        self.code_layout = bool(self.codes)
        specials = set()
        slots = {s for module in self.slots for s, k in module}
        for c in self.codes:
            for name, (off, size, role) in CODE_FIELDS.items():
                if role == 'ptr' and c + off not in slots:
                    self.code_layout = False
                if role == 'runtime' and get(self.data, c + off):
                    self.code_layout = False
            specials.add(code_int(self.data, c, 'co_framesize')
                         - code_int(self.data, c, 'co_nlocalsplus')
                         - code_int(self.data, c, 'co_stacksize'))
            names = get(self.data, c + CODE_FIELDS['co_localsplusnames'][0])
            if (names - self.base in self.type_of
                    and get(self.data, names - self.base + OB_SIZE)
                    != code_int(self.data, c, 'co_nlocalsplus')):
                self.code_layout = False
        if len(specials) != 1:
            self.code_layout = False
        if not self.code_layout:
            self.warnings.append('code objects do not have the expected '
                                 'layout: code-field mutations are off')
        if self.code_layout:
            off = CODE_FIELDS['co_consts'][0]
            self.types['tuple'] = self.types.get('tuple') or self.type_of.get(
                get(self.data, self.codes[0] + off) - self.base)
            off = CODE_FIELDS['co_linetable'][0]
            self.types['bytes'] = self.type_of.get(
                get(self.data, self.entries[0]['code'] + off) - self.base)
            self.type_names = {v: k for k, v in self.types.items()
                               if v is not None}
        self.str_layout = bool(self.strings) and all(
            self.str_ok(t) for t in self.strings[:200])
        if not self.str_layout:
            self.warnings.append('strings do not have the expected layout: '
                                 'string mutations are off')

    def str_ok(self, t):
        state = get(self.data, t + STR_STATE, 4)
        kind = (state >> ST_KIND_SHIFT) & 7
        return (kind in (1, 2, 4) and state & ST_COMPACT
                and get(self.data, t + STR_LENGTH, 8, True) >= 0)

    def str_size(self, data, t):
        state = get(data, t + STR_STATE, 4)
        kind = (state >> ST_KIND_SHIFT) & 7
        head = self.fmt.ASCII_HEADER if state & ST_ASCII else \
            self.fmt.COMPACT_HEADER
        return head + (get(data, t + STR_LENGTH) + 1) * kind

    def parse_seed(self):
        """The start-up strings: 16-aligned, one after the other."""
        self.seed = []
        at = self.h['str_offset']
        end = at + self.h['seed_size']
        while self.str_layout and at < end:
            self.seed.append(at)
            at += (self.str_size(self.data, at) + 15) // 16 * 16

    def parse_levels(self):
        """The level (LEVELS) of each object and of each tuple's items:
        the strongest check of any path from a module's code object."""
        self.obj_level = {}
        self.item_level = {}
        self.const_tuples = set()   # tuples whose items are constants
        self.operand_tables = set()  # co_consts and the names tuples
        if not self.code_layout:
            return          # unknown layout: everything counts as checked
        tuple_type = self.types.get('tuple')
        code_type = self.types['code']
        seen = {}
        heap = [(0, c, 'code') for c in self.codes]
        heap += [(0, t, 'leaf') for t in self.interners]
        frozenset_kind = self.fixup_kind('frozenset')
        for fx in self.fixup_lists:
            heap += [(0, get(self.data, off) - self.base, 'fsitems')
                     for off, kind in fx if kind == frozenset_kind]
        heapq.heapify(heap)
        while heap:
            level, t, role = heapq.heappop(heap)
            if seen.get((t, role), 3) <= level or t not in self.type_of:
                continue
            seen[(t, role)] = level
            self.obj_level[t] = min(self.obj_level.get(t, 2), level)
            if role == 'code':
                for name, (off, size, r) in CODE_FIELDS.items():
                    if r != 'ptr':
                        continue
                    target = get(self.data, t + off) - self.base
                    sub = ('consts' if name == 'co_consts' else 'names'
                           if name in ('co_names', 'co_localsplusnames')
                           else 'leaf')
                    heapq.heappush(heap, (level, target, sub))
                continue
            if role == 'leaf' or self.type_of[t] != tuple_type:
                continue
            # a tuple: its items are checked as it is
            inner = level
            self.item_level[t] = min(self.item_level.get(t, 2), inner)
            if role != 'names':
                self.const_tuples.add(t)
            if role in ('consts', 'names'):
                self.operand_tables.add(t)
            n = get(self.data, t + OB_SIZE)
            for k in range(min(n, 1 << 16)):
                item = get(self.data, t + TUPLE_ITEMS + 8 * k) - self.base
                if item not in self.type_of:
                    continue
                if role == 'consts' and self.type_of[item] == code_type:
                    heapq.heappush(heap, (level, item, 'code'))
                elif self.type_of[item] == tuple_type:
                    heapq.heappush(heap, (inner, item, 'items'))
                else:
                    heapq.heappush(heap, (inner, item, 'leaf'))

    def level_at(self, off):
        """The level of the byte at file offset 'off' (a slot, a field)."""
        k = bisect.bisect_right(self.objects, off) - 1
        if k < 0 or not self.obj_level:
            return 0
        t = self.objects[k]
        if (t in self.item_level and off >= t + TUPLE_ITEMS
                and off < t + TUPLE_ITEMS + 8 * get(self.data, t + OB_SIZE)):
            return self.item_level[t]
        return self.obj_level.get(t, 0)

    def is_constant_item(self, off):
        """Whether file offset 'off' is an item slot of a constants tuple."""
        k = bisect.bisect_right(self.objects, off) - 1
        if k < 0:
            return False
        t = self.objects[k]
        return (t in self.const_tuples and off >= t + TUPLE_ITEMS
                and off < t + TUPLE_ITEMS + 8 * get(self.data, t + OB_SIZE))

    def describe(self, off):
        """A short description of file offset 'off', for the reports."""
        m = self.owner(off)
        where = (self.names[m] if m is not None
                 else f'{self.region_of(off) or "outside the regions"}')
        k = bisect.bisect_right(self.objects, off) - 1
        if k >= 0 and off - self.objects[k] < 4096:
            t = self.objects[k]
            tname = self.type_names.get(self.type_of[t],
                                        f'type {self.type_of[t]:#x}')
            field = ''
            if tname == 'code':
                field = next((' ' + n for n, (o, s, r) in CODE_FIELDS.items()
                              if o == off - t), '')
            return f'{where}: {tname}@{t:#x}+{off - t}{field}'
        return f'{where}: {off:#x}'


# -- the checksums a forger redoes ----------------------------------------

def index_checksum(fmt, data, h):
    idx = h['index_offset']
    n = min(h['module_count'] * fmt.ENTRY.size, len(data))
    st = h['strtab_offset']
    return fmt.checksum(data[st:st + h['strtab_size']],
                        fmt.checksum(data[idx:idx + n]))


def seed_checksum(fmt, data, h):
    s = h['str_offset']
    return fmt.checksum(data[s:s + h['seed_size']])


def self_check(fmt, model):
    """The checksums the fuzzer redoes must be those of the archive, or
    every forged case would only test the checksums."""
    data = model.data
    problems = []
    if getattr(fmt, 'FORMAT_VERSION', model.h['format_version']) \
            != model.h['format_version']:
        problems.append(f'format.py describes format {fmt.FORMAT_VERSION}, '
                        f'the archive is format {model.h["format_version"]}')
        return problems
    h = model.h
    if fmt.header_checksum(h) != h['header_checksum']:
        problems.append('header_checksum')
    if index_checksum(fmt, data, h) != h['index_checksum']:
        problems.append('index_checksum')
    if seed_checksum(fmt, data, h) != h['seed_checksum']:
        problems.append('seed_checksum')
    for i, e in enumerate(model.entries[:20]):
        if fmt.module_checksum(data, e) != e['checksum']:
            problems.append(f'{model.names[i]}: checksum')
        start = h['reloc_offset'] + 8 * e['reloc_start']
        if (fmt.checksum(data[start:start + 8 * e['reloc_count']])
                != e['reloc_checksum']):
            problems.append(f'{model.names[i]}: reloc_checksum')
    return problems
