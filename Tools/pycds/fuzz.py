"""Mutation fuzzer of pycds archives and module lists.

Usage (from the top of a built tree):

    ./python Tools/pycds/fuzz.py --seconds N [--seed S] [--jobs J]
        [--targets header,index,strtab,records,objects,list] [--out DIR]
        [--timeout T] [--replay CASE] [--strict] [--keep] [--format PATH]

Set-up, in a temporary directory: a small application (a package of a few
modules: classes, closures, comprehensions, generators, frozensets and
constants of every archived type, f-strings, non-ASCII strings and
identifiers) is traced and dumped into an archive, with explicit
-X cds_list= and -X cds_archive= paths, and its output without the archive
(-X cds=off) is the baseline.

Then, until the time is up, each *case* makes a mutated copy of the archive
(or of the module list) and runs the interpreter on it in subprocesses with
a timeout: share mode with -X cds_verbose and a random choice of
-X cds_relocate (the relocation path), -X cds_verify (the deep checks),
-X cds_protect (and -X cds_check_source where the build has it); for the
module list, a dump of the mutated list (and a share run of the archive it
wrote) and a trace that merges into it.  The targets:

  header   bit, byte and field mutations of the header page, with and
           without header_checksum (and the checksums it covers) redone;
  index    fields of the module index, whole entries copied or swapped,
           bit flips; index_checksum redone or not;
  strtab   the string table (names, paths, their NULs); likewise;
  records  one module's relocation and fixup records: duplicated, swapped,
           moved out of the module or onto object headers, kinds changed,
           counts changed, with the module's checksums redone (and the
           records sorted again or not), so that they pass the checksums
           and reach the structural checks;
  objects  structural fields of one module's objects, its checksum redone:
           pointer slots (every slot has a relocation record: set to other
           objects, other modules, the preferred base plus anything, off by
           8 or 16, 0, huge values), object headers at pointer targets
           (ob_refcnt, ob_type, ob_size, a tuple's GC header), strings'
           cached hash, state bits, length and UTF-8 cache, and the code
           object fields the interpreter derives (co_nlocalsplus,
           co_framesize, ..., co_version, the runtime-only pointers) and
           the sizes of the tuples a code object indexes.  Never the
           bytecode, line or exception tables or the fields a .pyc also
           carries: those are trusted content once the checksums pass, as
           a .pyc's are (the documented trust boundary);
  list     the module list text: long lines, invalid UTF-8, NUL bytes,
           more than a million entries, bogus kinds and names, duplicates,
           truncated lines, entries and list paths that are FIFOs, links
           to /dev/zero, directories.

Outcomes: *served* (the baseline output, the archive used), *refused* (the
baseline output, the archive or a module not used), *error* (another output
or exit status where the mutation may change what the program runs: forged
content), *undetected* (another output where it may not: damage the
checksums should have caught, or fields documented as reset), *crash*
(killed by a signal, a timeout, a sanitizer report, a Python traceback that
mentions cds internals, or "Fatal Python error" but as the start-up failure
forged content may cause), and *unchecked*: a crash whose mutations lie
where the documented checks do not look with the run's options (the names
and direct constants of a code object without -X cds_verify, constants
nested in constant tuples at all): reported, saved, not counted as a crash
but with --strict.  Crashes are saved with their input, output and a cmd.sh
that reruns them under --out (default: fuzz-crashes in the work directory,
which is then kept), the others under OUT/unchecked and OUT/undetected.
Case N of a seed is always the same mutation of the same baseline
(--replay N reruns it alone and shows it), whatever --jobs is.  A run
stops early if the interpreter binary changes under it (a rebuild).

The archive's layout comes from Lib/test/test_cds/format.py (the HEADER,
ENTRY and FIXUP structs, their field names, the checksums), read at run
time, so that the fuzzer follows format changes; --format PATH uses another
copy of that reader (to fuzz a binary built from another revision).  What
format.py does not describe (the object layouts of CPython 3.13 on 64-bit
Linux) is checked against the archive at set-up; a mismatch turns the
mutations that rely on it off, with a warning.

Exit status: 0 no crash, 1 a crash was found, 2 the set-up failed.
"""

import argparse
import bisect
import heapq
from collections import Counter
import importlib.util
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import traceback

from test.test_cds.util import clean_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

TARGETS = ('header', 'index', 'strtab', 'records', 'objects', 'list')
# how often each target is picked: the deep ones get more runs
TARGET_WEIGHTS = {'header': 2, 'index': 2, 'strtab': 1, 'records': 4,
                  'objects': 6, 'list': 2}
# -X options a share run may add (those the build accepts; see setup)
EXTRA_OPTIONS = ('cds_relocate', 'cds_verify', 'cds_protect',
                 'cds_check_source')

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
# in every run (code objects, their direct fields, shared strings,
# frozenset tuples); 'verify', only under -X cds_verify (each name and
# direct constant); 'trusted', never (constants nested in constant tuples,
# frozenset items: trusted as a .pyc's content is).  A crash whose
# mutations the checks do not cover with the run's options is reported as
# 'unchecked', not as a crash.
LEVELS = ('default', 'verify', 'trusted')

# The application.  Its output is deterministic (no hash order, paths
# replaced); at exit it writes _cds.info() to stderr, which tells served
# from refused.  No name or path here contains "cds": a traceback that
# does is about the interpreter's archive code.
APP = {
    'fzapp/__init__.py': '''
        """The application the pycds fuzzer runs."""
        from fzapp import consts, shapes, flow
        VERSION = (0, 3)
    ''',
    'fzapp/consts.py': '''
        BIG = 2 ** 200 - 12345
        NEG = -(2 ** 70)
        SMALL = (-5, 0, 256, 257)
        FLOATS = (1.5, -0.0, float("inf"), 1e300)
        COMPLEX = 3 + 4j
        DATA = b"\\x00\\xffbytes"
        LATIN1 = "caf\\xe9 na\\xefve"
        UCS2 = "\\u03b1\\u03b2\\u03b3 \\u4e2d\\u6587"
        UCS4 = "emoji \\U0001F600 \\U0001F680"
        ÄNDERUNG = "identifier with umlaut"
        EMPTY = ("", b"", ())
        NESTED = (1, (2, (3, ("deep", None, True, False, ...))))
        TABLE = {"alpha": 1, "beta": 2, "gamma": 3, "\\xe9t\\xe9": 4}

        def member(x):
            return x in {"alpha", "beta", "gamma", 42, (1, 2), 2.5}

        def keyword(word):
            return word in frozenset({"if", "else", "while"})

        def lookup(key):
            return TABLE.get(key, -1)
    ''',
    'fzapp/shapes.py': '''
        import math

        class Meta(type):
            registry = []

            def __new__(mcls, name, bases, ns, **kw):
                cls = super().__new__(mcls, name, bases, ns)
                mcls.registry.append(name)
                return cls

            def __repr__(cls):
                return f"<Meta {cls.__qualname__}>"

        class Shape(metaclass=Meta):
            sides = 0
            __slots__ = ("name",)

            def __init__(self, name="shape"):
                self.name = name

            def describe(self):
                return f"{type(self).__name__} {self.name!r}: {self.sides}"

            def größe(self):
                return self.sides * 1.5

        class Square(Shape):
            sides = 4
            __slots__ = ("side",)

            def __init__(self, side):
                super().__init__("square")
                self.side = side

            @property
            def area(self):
                return self.side ** 2

            @staticmethod
            def unit():
                return Square(1)

            @classmethod
            def of(cls, n):
                return [cls(i) for i in range(n)]

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def norm(self):
                return math.hypot(self.x, self.y)

            def __repr__(self):
                return f"Point({self.x:.2f}, {self.y:>4})"

        def make_adder(n):
            def add(x):
                return x + n
            return add

        def report():
            sq = Square(3)
            return [
                repr((sq.describe(), sq.area, sq.größe(), Square.unit().area,
                      [s.area for s in Square.of(4)])),
                repr((Point(3, 4), Point(3, 4).norm(), make_adder(5)(10))),
                repr((Square, sorted(Meta.registry))),
            ]
    ''',
    'fzapp/flow.py': '''
        def fail(depth=0):
            if depth == 3:
                raise ValueError(f"boom at depth {depth}")
            return fail(depth + 1)

        def counter():
            count = 0
            def step(by=1):
                nonlocal count
                count += by
                return count
            return step

        def gen(n):
            for i in range(n):
                if i % 2:
                    yield i * i
                else:
                    yield -i

        def kinds(a, b=2, /, c=3, *args, d, e=5, **kw):
            return (a, b, c, args, d, e, sorted(kw.items()))

        def matcher(value):
            match value:
                case {"x": x, "y": y}:
                    return f"point {x},{y}"
                case [first, *rest]:
                    return f"seq {first} +{len(rest)}"
                case str() as s if s.isidentifier():
                    return f"name {s!r}"
                case _:
                    return "other"

        class Resource:
            def __init__(self, log):
                self.log = log

            def __enter__(self):
                self.log.append("enter")
                return self

            def __exit__(self, *exc):
                self.log.append(f"exit {exc[0].__name__ if exc[0] else None}")
                return True

        async def twice(x):
            return x * 2

        def run(coro):
            try:
                coro.send(None)
            except StopIteration as e:
                return e.value

        def report():
            step = counter()
            log = []
            with Resource(log):
                log.append(step(5))
                raise KeyError("swallowed")
            try:
                try:
                    1 / 0
                finally:
                    log.append("finally")
            except ZeroDivisionError as exc:
                log.append(type(exc).__name__)
            squares = {i: [j for j in range(i) if j % 2] for i in range(6)}
            fns = [lambda x, i=i: x + i for i in range(3)]
            return [
                repr(list(gen(7))),
                repr(kinds(1, d=4, z=26)),
                repr([matcher(v) for v in ({"x": 1, "y": 2}, [1, 2, 3],
                                           "ident", 3.5)]),
                repr((log, step(), step(2))),
                repr((squares, [f(10) for f in fns], run(twice(21)))),
                f"{'nested ' + f'{3.14159:.3f}'!r:>20}|{len(squares):#x}",
            ]
    ''',
    'main.py': '''
        import json, os, sys, traceback, _weakref
        import fzapp
        from fzapp import consts, shapes, flow

        HERE = os.path.dirname(os.path.abspath(__file__))

        def clean(text):
            return text.replace(HERE, "<app>").replace(sys.prefix, "<prefix>")

        out = []
        out.append(repr((consts.BIG, consts.NEG, consts.SMALL, consts.FLOATS,
                         consts.COMPLEX, consts.DATA, consts.LATIN1,
                         consts.UCS2, consts.UCS4, consts.ÄNDERUNG,
                         consts.EMPTY, consts.NESTED, fzapp.VERSION)))
        out.append(f"{consts.LATIN1} {consts.UCS2} {consts.UCS4}")
        # the archived strings themselves through the UTF-8 encoder
        out.append(repr([s.encode() for s in (consts.LATIN1, consts.UCS2,
                                              consts.UCS4, consts.ÄNDERUNG)]))
        out.append(consts.LATIN1)
        out.append(repr([consts.member(v)
                         for v in ("alpha", "delta", 42, (1, 2), 2.5, 7)]))
        out.append(repr([consts.keyword(w) for w in ("if", "for")]))
        out.append(repr([consts.lookup("".join(p))
                         for p in (("al", "pha"), ("\\xe9", "t\\xe9"))]))
        out.extend(shapes.report())
        out.extend(flow.report())
        try:
            flow.fail()
        except ValueError:
            out.append(clean(traceback.format_exc()))
        for f in (consts.member, shapes.make_adder, shapes.make_adder(1),
                  flow.fail, shapes.Square.describe, flow.counter()):
            co = f.__code__
            out.append(repr((co.co_name, co.co_qualname, co.co_varnames,
                             co.co_cellvars, co.co_freevars, co.co_argcount,
                             len(co.co_code), co.co_firstlineno,
                             [line for _, _, line in co.co_lines()][:4],
                             _weakref.ref(co)() is co)))
        out.append(repr(sorted(n for n in vars(consts) if n[0] != "_")))
        out.append(json.dumps({"k": [1, 2.5, None, "\\xe9"]}, sort_keys=True))
        print("\\n".join(out))
        try:
            import _cds
            info = _cds.info()
        except ImportError:
            info = {}
        sys.stderr.write("FZINFO " + json.dumps(info) + "\\n")
    ''',
}


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
        start = self.h['reloc_offset'] + 8 * e['reloc_start']
        words = data[start:start + 8 * e['reloc_count']]
        return [w for (w,) in struct.iter_unpack('<Q', words)]

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
        if not self.code_layout:
            return          # unknown layout: everything counts as checked
        tuple_type = self.types.get('tuple')
        code_type = self.types['code']
        seen = {}
        heap = [(0, c, 'code') for c in self.codes]
        heap += [(0, t, 'leaf') for t in self.interners]
        frozenset_kind = self.fixup_kind('frozenset')
        for fx in self.fixup_lists:
            heap += [(0, get(self.data, off) - self.base, 'items')
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
            # a tuple: 'consts' and 'names' items are checked under
            # -X cds_verify, 'items' (nested, frozenset) never
            inner = 2 if role == 'items' else max(level, 1)
            self.item_level[t] = min(self.item_level.get(t, 2), inner)
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


# -- mutated archives -------------------------------------------------------

class Mutant:
    """A mutable copy of the baseline archive, and the checksums to redo."""

    def __init__(self, model):
        self.m = model
        self.fmt = model.fmt
        self.data = bytearray(model.data)
        self.modules = set()       # entries whose checksums to redo
        self.index = False         # index_checksum to redo
        self.seed = False
        self.notes = []
        self.level = 0             # the weakest check covering a change

    def cover(self, level):
        self.level = max(self.level, level)

    def note(self, text):
        self.notes.append(text)

    def entry(self, i):
        return self.m.read_entry(self.data, i)

    def set_entry(self, i, field, value):
        off, size = self.m.ef[field]
        put(self.data, self.m.entry_offset(i) + off, value, size)
        self.index = True

    def header_field(self, field):
        off, size = self.m.hf[field]
        return get(self.data, off, size)

    def set_header_field(self, field, value):
        off, size = self.m.hf[field]
        put(self.data, off, value, size)

    # the records are written where they were: a changed reloc_start or
    # fixup_start then shifts the window the entry reads

    def set_relocs(self, i, words):
        e = self.m.entries[i]
        start = self.m.h['reloc_offset'] + 8 * e['reloc_start']
        for k, w in enumerate(words):
            put(self.data, start + 8 * k, w)

    def set_fixups(self, i, records):
        e = self.m.entries[i]
        fx = self.fmt.FIXUP
        start = self.m.h['fixup_offset'] + fx.size * e['fixup_start']
        for k, (off, kind) in enumerate(records):
            at = start + fx.size * k
            if at + fx.size <= len(self.data):
                fx.pack_into(self.data, at, off & M64, kind & M64)

    def touch(self, off):
        """Note that the bytes at 'off' changed: redo the checksums that
        cover them (the owning module's, or those interning a shared
        string there, and the start-up strings')."""
        m = self.m.owner(off)
        if m is not None:
            self.modules.add(m)
        k = bisect.bisect_right(self.m.objects, off) - 1
        if k >= 0:
            t = self.m.objects[k]
            self.modules.update(self.m.interners.get(t, ()))
        h = self.m.h
        if h['str_offset'] <= off < h['str_offset'] + h['seed_size']:
            self.seed = True

    def finish(self, forge=True):
        """The archive's bytes; with 'forge', every checksum the changes
        broke is redone, as an attacker who read the format would."""
        if not forge:
            return bytes(self.data)
        fmt = self.fmt
        data = self.data
        changes = {}
        snapshot = bytes(data)      # what the module checksums cover
        for i in sorted(self.modules):
            e = self.entry(i)
            try:
                c = fmt.module_checksum(snapshot, e)
            except (KeyError, IndexError, ValueError, struct.error,
                    OverflowError, MemoryError):
                c = None        # a bogus fixup kind: refused before this
            if c is not None:
                self.set_entry(i, 'checksum', c)
            start = self.m.h['reloc_offset'] + 8 * e['reloc_start']
            n = min(e['reloc_count'], max(0, (len(data) - start) // 8))
            self.set_entry(i, 'reloc_checksum',
                           fmt.checksum(data[start:start + 8 * n]))
        h = fmt.read_header(data)
        if self.index:
            changes['index_checksum'] = index_checksum(fmt, data, h)
        if self.seed:
            changes['seed_checksum'] = seed_checksum(fmt, data, h)
        return fmt.set_header(bytes(data), **changes)


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
    """The checksums fuzz.py redoes must be those of the archive, or
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


# -- value pickers ----------------------------------------------------------

def interesting(rng, current, size, model=None):
    """A value for an integer field of 'size' bytes now holding 'current'."""
    bits = 8 * size
    choices = [0, 1, -1, current + 1, current - 1, current + 8, current - 8,
               current + 16, current - 16, current * 2, current // 2,
               current ^ (1 << rng.randrange(bits)), 1 << (bits - 1),
               (1 << (bits - 1)) - 1, rng.getrandbits(bits),
               current + 4096, current - 4096, 0x7fffffff, 0x80000000]
    if model is not None and size == 8:
        choices += [model.size, model.size - 8, model.size + 4096,
                    model.base, model.base + model.size, M64 - 7]
    return rng.choice(choices) & ((1 << bits) - 1)


def pointer_value(rng, model, old, target_bit):
    """A new value for a pointer slot now holding 'old', and a note."""
    base = model.base
    objs = model.objects
    choice = rng.randrange(13)
    if choice == 0:
        t = rng.choice(objs)
        return base + t, f'another object ({model.describe(t)})'
    if choice == 1 and old - base in model.type_of:
        t = rng.choice(model.by_type[model.type_of[old - base]])
        return base + t, f'an object of the same type ({model.describe(t)})'
    if choice == 2 and model.strings:
        t = rng.choice(model.strings)
        return base + t, f'a string ({model.describe(t)})'
    if choice == 3:
        d = rng.choice([8, 16, 24, -8, -16, 1, 4, 40, 56])
        return old + d, f'off by {d}'
    if choice == 4:
        t = rng.randrange(model.size)
        t = t & ~7 if rng.random() < 0.8 else t
        return base + t, f'base + {t:#x} ({model.describe(t)})'
    if choice == 5:
        r = rng.choice(model.fmt.REGIONS)
        t = model.h[f'{r}_offset'] + rng.choice(
            [0, -8, -16, model.h[f'{r}_size'], model.h[f'{r}_size'] - 8])
        return base + t, f'{r} region edge {t:#x}'
    if choice == 6:
        t = rng.choice([model.size, model.size + 8, model.size + 4096,
                        model.size + (1 << 30), -8, -4096, -(1 << 30)])
        return base + t, f'outside the archive (base {t:+#x})'
    if choice == 7:
        return 0, 'NULL'
    if choice == 8:
        v = rng.choice([1 << 63, M64 - 7, M64, 0x7fffffffffff,
                        0xffff800000000000, 8, 4096])
        return v, f'{v:#x}'
    if choice == 9 and model.image_values:
        v = rng.choice(model.image_values)
        return v, f'an image object {v:#x}'
    if choice == 10 and target_bit == 1:
        d = rng.choice([8, -8, 16, -16, 64, 4096])
        return old + d, f'image pointer off by {d}'
    if choice == 11:
        t = get(model.data, old - base) if 0 <= old - base < model.size else 0
        return t, f'what it points to ({t:#x})'
    t = rng.choice(model.codes or objs)
    return base + t, f'a code object ({model.describe(t)})'


# -- mutators: each returns (bytes, notes, expect, level) -----------------
#
# expect: 'baseline' when the program must print its baseline output (the
# archive refused or unaffected), 'any' when the mutation may change what
# it runs (forged content); only a crash is a failure then.  level: the
# weakest check that covers the change (LEVELS; damage, with the checksums
# left, is always 'default': the checksums catch it).

def pick_module(rng, model):
    if model.app_modules and rng.random() < 0.5:
        return rng.choice(model.app_modules)
    return rng.randrange(len(model.entries))


def mutate_header(rng, model):
    mu = Mutant(model)
    size = model.fmt.HEADER.size
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(4)
        if op == 0:
            span = size if rng.random() < 0.9 else model.fmt.PAGE
            bit = rng.randrange(8 * span)
            mu.data[bit // 8] ^= 1 << (bit % 8)
            mu.note(f'flip bit {bit % 8} of header byte {bit // 8:#x}')
        elif op == 1:
            at = rng.randrange(size)
            mu.data[at] = rng.choice([0, 0xff, rng.randrange(256)])
            mu.note(f'set header byte {at:#x} to {mu.data[at]:#x}')
        else:
            field = rng.choice([f for f in model.fmt.HEADER_FIELDS
                                if f != 'magic'])
            off, fsize = model.hf[field]
            old = get(mu.data, off, fsize)
            if fsize > 8:
                at = off + rng.randrange(fsize)
                mu.data[at] ^= 1 << rng.randrange(8)
                mu.note(f'{field}: flip a bit at +{at - off}')
                continue
            fields = [mu.header_field(f) for f in model.hf
                      if model.hf[f][1] == 8]
            new = (rng.choice(fields) if op == 3 and fsize == 8
                   else interesting(rng, old, fsize, model))
            put(mu.data, off, new, fsize)
            mu.note(f'{field}: {old:#x} -> {new & ((1 << 8 * fsize) - 1):#x}')
    forge = rng.random() < 0.8
    if forge and rng.random() < 0.5:
        # also the checksums the header's offsets and counts select
        h = model.fmt.read_header(mu.data)
        if h['module_count'] * model.fmt.ENTRY.size + h['strtab_size'] \
                < (1 << 20):
            mu.set_header_field('index_checksum',
                                index_checksum(model.fmt, mu.data, h))
        if h['seed_size'] < (1 << 20):
            mu.set_header_field('seed_checksum',
                                seed_checksum(model.fmt, mu.data, h))
        mu.note('index and seed checksums redone')
    mu.note('header_checksum redone' if forge else 'checksums left')
    data = model.fmt.set_header(bytes(mu.data)) if forge else bytes(mu.data)
    return data, mu.notes, 'any' if forge else 'baseline', 0


def mutate_index(rng, model):
    mu = Mutant(model)
    n = len(model.entries)
    for _ in range(rng.choice([1, 1, 1, 2])):
        i = pick_module(rng, model)
        op = rng.randrange(10)
        if op == 0 and n > 1:
            j = rng.randrange(n)
            a, b = model.entry_offset(i), model.entry_offset(j)
            es = model.fmt.ENTRY.size
            mu.data[b:b + es] = model.data[a:a + es]
            mu.note(f'entry {j} ({model.names[j]}) := entry {i} '
                    f'({model.names[i]})')
        elif op == 1 and n > 1:
            j = rng.randrange(n)
            a, b = model.entry_offset(i), model.entry_offset(j)
            es = model.fmt.ENTRY.size
            mu.data[a:a + es] = model.data[b:b + es]
            mu.data[b:b + es] = model.data[a:a + es]
            mu.note(f'entries {i} and {j} swapped')
        elif op == 2:
            bit = rng.randrange(8 * model.fmt.ENTRY.size)
            at = model.entry_offset(i) + bit // 8
            mu.data[at] ^= 1 << (bit % 8)
            mu.note(f'{model.names[i]}: flip bit {bit} of its entry')
        else:
            field = rng.choice(model.fmt.ENTRY_FIELDS)
            e = mu.entry(i)
            old = e[field]
            size = model.ef[field][1]
            r = rng.random()
            if field == 'code' and r < 0.5:
                pool = model.codes if rng.random() < 0.5 else model.objects
                new = rng.choice(pool)
            elif field == 'kind':
                new = rng.choice([0, 1, 2, 3, 255, 1 << 31])
            elif r < 0.3:
                other = model.entries[rng.randrange(n)]
                new = other[field]
            elif r < 0.45 and field.endswith(('_start', '_end')):
                new = rng.choice(list(model.entries[rng.randrange(n)].values())
                                 [2:])
            else:
                new = interesting(rng, old, size, model)
            mu.set_entry(i, field, new)
            mu.note(f'{model.names[i]}: {field} {old:#x} -> '
                    f'{new & ((1 << 8 * size) - 1):#x}')
    forge = rng.random() < 0.8
    mu.index = forge
    mu.note('index_checksum redone' if forge else 'checksums left')
    return mu.finish(forge), mu.notes, 'any' if forge else 'baseline', 0


def mutate_strtab(rng, model):
    mu = Mutant(model)
    lo = model.h['strtab_offset']
    size = model.h['strtab_size']
    for _ in range(rng.choice([1, 1, 2, 3])):
        e = model.entries[pick_module(rng, model)]
        op = rng.randrange(6)
        if op == 0:
            at = lo + rng.randrange(size)
            mu.data[at] ^= 1 << rng.randrange(8)
            mu.note(f'flip a bit of strtab byte {at - lo:#x}')
        elif op in (1, 2):
            # a byte of a name: a NUL, a dot, a slash, invalid UTF-8
            at = lo + e['name_off'] + rng.randrange(max(1, e['name_len']))
            mu.data[at] = rng.choice(b'\x00./\xff\xc3\x80A_')
            mu.note(f'name byte {at - lo:#x} := {mu.data[at]:#x}')
        elif op == 3:
            # the NUL after a name or path
            at = lo + rng.choice([e['name_off'] + e['name_len'],
                                  e['path_off'] + e['path_len']])
            if at < lo + size:
                mu.data[at] = ord('x')
            mu.note(f'strtab terminator at {at - lo:#x} := "x"')
        elif op == 4 and e['path_len']:
            at = lo + e['path_off'] + rng.randrange(e['path_len'])
            mu.data[at] = rng.choice(b'\x00/.\xffz')
            mu.note(f'path byte {at - lo:#x} := {mu.data[at]:#x}')
        else:
            n = rng.randrange(1, 16)
            a = lo + rng.randrange(max(1, size - n))
            b = lo + rng.randrange(max(1, size - n))
            mu.data[b:b + n] = model.data[a:a + n]
            mu.note(f'strtab bytes {a - lo:#x}+{n} copied to {b - lo:#x}')
    forge = rng.random() < 0.8
    mu.index = forge
    mu.note('index_checksum redone' if forge else 'checksums left')
    return mu.finish(forge), mu.notes, 'any' if forge else 'baseline', 0


def mutate_records(rng, model):
    mu = Mutant(model)
    i = pick_module(rng, model)
    name = model.names[i]
    e = model.entries[i]
    words = model.relocs(model.data, e)
    fixups = list(model.fixup_lists[i])
    slots = [w & ~7 for w in words]
    objs = model.by_module.get(i, [])
    kinds = list(model.fmt.FIXUP_KINDS)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(14)
        if op < 7 and not words or op >= 7 and not fixups:
            continue
        k = rng.randrange(len(words)) if op < 7 else rng.randrange(len(fixups))
        if op == 0:
            j = rng.randrange(len(words))
            words[k] = words[j]
            mu.note(f'{name}: reloc {k} := reloc {j} (duplicate '
                    f'{model.describe(words[j] & ~7)})')
        elif op == 1 and k + 1 < len(words):
            words[k + 1] = words[k]
            mu.note(f'{name}: reloc {k + 1} := reloc {k} (adjacent duplicate '
                    f'{model.describe(words[k] & ~7)})')
        elif op == 2:
            j = rng.randrange(len(words))
            words[k], words[j] = words[j], words[k]
            mu.note(f'{name}: relocs {k} and {j} swapped')
        elif op == 3:
            words[k] ^= rng.choice([1, 2, 4, 6])
            mu.note(f'{name}: reloc {k} low bits -> {words[k] & 7}')
        elif op == 4:
            others = rng.choice([s for s in model.slots if s])
            dest = rng.choice([
                rng.randrange(model.fmt.PAGE), model.size,
                model.size + 8, M64 - 7, 1 << 63,
                rng.randrange(model.size) & ~7, rng.choice(others)[0]])
            words[k] = (dest & ~7) | (words[k] & 1)
            mu.note(f'{name}: reloc {k} moved to {dest:#x} '
                    f'({model.describe(dest)})')
        elif op == 5 and objs:
            t = rng.choice(objs)
            d = rng.choice([OB_REFCNT, OB_TYPE, OB_SIZE, -GC_HEAD, -8])
            words[k] = ((t + d) & ~7) | (words[k] & 1)
            mu.note(f'{name}: reloc {k} moved onto {model.describe(t + d)}')
        elif op == 6:
            d = rng.choice([8, -8, 16, -16])
            words[k] = (words[k] + d) & M64
            mu.note(f'{name}: reloc {k} off by {d} '
                    f'({model.describe(words[k] & ~7)})')
        elif op == 7:
            j = rng.randrange(len(fixups))
            fixups[k] = fixups[j]
            mu.note(f'{name}: fixup {k} := fixup {j}')
        elif op == 8:
            j = rng.randrange(len(fixups))
            fixups[k], fixups[j] = fixups[j], fixups[k]
            mu.note(f'{name}: fixups {k} and {j} swapped')
        elif op == 9:
            kind = rng.choice(kinds + [0, len(kinds) + 1, 255, 1 << 63])
            mu.note(f'{name}: fixup {k} kind {fixups[k][1]} -> {kind} at '
                    f'{model.describe(fixups[k][0])}')
            fixups[k] = (fixups[k][0], kind)
        elif op == 10:
            pool = [rng.choice(slots) if slots else 0,
                    rng.choice(objs) if objs else 0,
                    fixups[k][0] + rng.choice([8, -8, 4, 16]),
                    M64 - 7, M64 - 3, rng.randrange(model.size),
                    e['code'], e['code'] + OB_TYPE]
            off = rng.choice(pool) & M64
            kind = model.fmt.FIXUP_KINDS.get(fixups[k][1])
            mu.note(f'{name}: fixup {k} ({kind}) moved to '
                    f'{model.describe(off)}')
            fixups[k] = (off, fixups[k][1])
        elif op == 11:
            field = rng.choice(['reloc_count', 'reloc_start'])
            d = rng.choice([1, -1, 2, 1 << 20])
            mu.set_entry(i, field, e[field] + d)
            mu.note(f'{name}: {field} {d:+}')
        else:
            field = rng.choice(['fixup_count', 'fixup_start'])
            d = rng.choice([1, -1, 2])
            mu.set_entry(i, field, e[field] + d)
            mu.note(f'{name}: {field} {d:+}')
    if rng.random() < 0.5:
        words.sort()
        mu.note('relocation records sorted again')
    mu.set_relocs(i, words)
    mu.set_fixups(i, fixups)
    mu.modules.add(i)
    # Fixups are checked whatever slot they name ('default'); so are
    # relocation words not strictly ascending (when relocating).  Words
    # that pass those checks but apply elsewhere change what the slots
    # hold: the level of the slots whose words changed.
    after = model.relocs(mu.data, mu.entry(i))
    if all(a < b for a, b in zip(after, after[1:])):
        new, old = Counter(after), Counter(model.relocs(model.data, e))
        for w in (new - old) + (old - new):
            mu.cover(model.level_at(w & ~7))
    forge = rng.random() < 0.85
    mu.index = forge
    mu.note('checksums redone' if forge else 'checksums left')
    return (mu.finish(forge), mu.notes, 'any' if forge else 'baseline',
            mu.level if forge else 0)


def mutate_slot(rng, mu, i):
    model = mu.m
    slots = model.slots[i]
    if not slots:
        return False
    s, bit = rng.choice(slots)
    old = get(mu.data, s)
    new, how = pointer_value(rng, model, old, bit)
    put(mu.data, s, new)
    mu.touch(s)
    mu.cover(model.level_at(s))
    mu.note(f'slot {model.describe(s)} ({"image" if bit else "archive"}) '
            f'{old:#x} -> {how}')
    return True


def mutate_object_header(rng, mu, i):
    model = mu.m
    objs = model.by_module.get(i)
    if not objs:
        return False
    t = rng.choice(objs)
    what = model.describe(t)
    tname = model.type_names.get(model.type_of[t], 'object')
    mu.cover(model.obj_level.get(t, 0))
    field = rng.choice(['refcnt', 'type', 'type', 'size', 'size', 'gc'])
    if field == 'refcnt':
        new = rng.choice([0, 1, 2, 0x7fffffff, 0x7ffffffe, 0xfffffffe,
                          0x80000000, 1 << 32])
        put(mu.data, t + OB_REFCNT, new)
        mu.note(f'{what}: ob_refcnt := {new:#x}')
    elif field == 'type':
        old = get(mu.data, t + OB_TYPE)
        pool = [v for v in model.type_names if v != old] or [old]
        new = rng.choice([rng.choice(pool), rng.choice(pool),
                          rng.choice(model.image_values or [0]),
                          old + 8, old - 8, 0,
                          model.base + rng.choice(model.objects)])
        put(mu.data, t + OB_TYPE, new)
        mu.note(f'{what}: ob_type {old:#x} -> {new:#x} '
                f'({model.type_names.get(new, "?")})')
    elif field == 'size':
        old = get(mu.data, t + OB_SIZE)
        new = interesting(rng, old, 8)
        put(mu.data, t + OB_SIZE, new)
        mu.note(f'{what}: word at +16 (ob_size) {old:#x} -> {new:#x}')
    else:
        if tname != 'tuple':
            return False
        new = rng.choice([1, 8, model.base + t, 1 << 63, M64, 2, 3])
        at = t - GC_HEAD + rng.choice([0, 8])
        put(mu.data, at, new)
        mu.note(f'{what}: GC header word at {at - t} := {new:#x}')
    mu.touch(t)
    return True


def mutate_string(rng, mu, t):
    """A structural field of the string at 't'; whether the program must
    still give its baseline output (fields the reader resets)."""
    model = mu.m
    what = model.describe(t)
    mu.cover(model.obj_level.get(t, 0))
    state = get(mu.data, t + STR_STATE, 4)
    ascii = state & ST_ASCII
    op = rng.choice(['hash', 'hash', 'interned', 'kind', 'ascii', 'compact',
                     'static', 'bit', 'length', 'utf8', 'utf8'])
    shared = model.region_of(t) == 'str'
    if op == 'hash':
        new = rng.choice([0, 1, 2, -2, rng.getrandbits(64),
                          get(mu.data, rng.choice(model.strings) + STR_HASH)])
        put(mu.data, t + STR_HASH, new)
        mu.note(f'{what}: cached hash := {new & M64:#x}')
        return shared
    if op == 'length':
        old = get(mu.data, t + STR_LENGTH)
        new = interesting(rng, old, 8)
        put(mu.data, t + STR_LENGTH, new)
        mu.note(f'{what}: length {old} -> {new:#x}')
        return False
    if op == 'utf8' and not ascii:
        # the UTF-8 cache: its pointer, its length, or both (a pointer
        # with a zero length reads nothing)
        which = rng.choice(['utf8', 'utf8_length', 'both'])
        if which != 'utf8_length':
            o = rng.choice(model.strings)
            new = rng.choice([model.base + o + model.fmt.ASCII_HEADER,
                              model.base + rng.randrange(model.size), 16,
                              M64 - 15, model.base + model.size])
            put(mu.data, t + STR_UTF8, new)
            mu.note(f'{what}: utf8 := {new:#x}')
        if which != 'utf8':
            new = rng.choice([1, 8, 64, 4096, 1 << 31, M64,
                              get(mu.data, t + STR_LENGTH) + 1])
            put(mu.data, t + STR_UTF8_LENGTH, new)
            mu.note(f'{what}: utf8_length := {new:#x}')
        return False
    if op == 'interned':
        new = (state & ~ST_INTERNED) | rng.choice([1, 2, 3])
        put(mu.data, t + STR_STATE, new, 4)
        mu.note(f'{what}: state.interned := {new & 3}')
        return shared
    if op == 'kind':
        kind = rng.choice([0, 1, 2, 3, 4, 5, 7])
        new = (state & ~(7 << ST_KIND_SHIFT)) | (kind << ST_KIND_SHIFT)
        mu.note(f'{what}: state.kind := {kind}')
    elif op == 'ascii' or op == 'utf8':
        new = state ^ ST_ASCII
        mu.note(f'{what}: state.ascii flipped')
    elif op == 'compact':
        new = state & ~ST_COMPACT
        mu.note(f'{what}: state.compact := 0')
    elif op == 'static':
        new = state & ~ST_STATIC
        mu.note(f'{what}: state.statically_allocated := 0')
    else:
        bit = rng.randrange(32)
        new = state ^ (1 << bit)
        mu.note(f'{what}: state bit {bit} flipped')
    put(mu.data, t + STR_STATE, new, 4)
    return False


def mutate_code(rng, mu, i):
    model = mu.m
    codes = [t for t in model.by_module.get(i, ())
             if model.type_of[t] == model.types['code']]
    if not codes or not model.code_layout:
        return False
    c = rng.choice(codes)
    what = model.describe(c)
    op = rng.randrange(5)
    if op == 0:
        name = rng.choice([n for n, f in CODE_FIELDS.items()
                           if f[2] == 'derived'])
        off, size, _ = CODE_FIELDS[name]
        old = get(mu.data, c + off, size, True)
        other = get(mu.data, rng.choice(model.codes) + off, size)
        new = rng.choice([interesting(rng, old, size), other, old + 1,
                          old - 1, 0, -1])
        put(mu.data, c + off, new, size)
        mu.note(f'{what}: {name} {old} -> {new}')
    elif op == 1:
        name = rng.choice([n for n, f in CODE_FIELDS.items()
                           if f[2] == 'runtime'])
        off, size, _ = CODE_FIELDS[name]
        new = rng.choice([1, 8, model.base + rng.choice(model.objects),
                          model.base + rng.randrange(model.size), M64,
                          rng.choice(model.image_values or [16])])
        put(mu.data, c + off, new, size)
        mu.note(f'{what}: {name} := {new:#x}')
    elif op == 2:
        # the locals, consistently: frame size and count agree, the
        # tuple and bytes of names and kinds do not (or do)
        d = rng.choice([1, -1, 2, 8, -2])
        for name in ('co_nlocalsplus', 'co_framesize'):
            put(mu.data, c + CODE_FIELDS[name][0],
                code_int(mu.data, c, name) + d, 4)
        resized = []
        for name in ('co_localsplusnames', 'co_localspluskinds'):
            t = get(mu.data, c + CODE_FIELDS[name][0]) - model.base
            if model.owner(t) == i and rng.random() < 0.6:
                put(mu.data, t + OB_SIZE, get(mu.data, t + OB_SIZE) + d)
                mu.touch(t)
                resized.append(name)
        mu.note(f'{what}: co_nlocalsplus and co_framesize {d:+}'
                f'{", sizes of " + " and ".join(resized) if resized else ""}')
    elif op == 3:
        # a tuple the bytecode indexes, shorter or longer than it needs
        name = rng.choice(['co_consts', 'co_names', 'co_localsplusnames'])
        t = get(mu.data, c + CODE_FIELDS[name][0]) - model.base
        if model.owner(t) != i:
            return False
        old = get(mu.data, t + OB_SIZE)
        new = rng.choice([old - 1, old - 2, 0, old + 1, old + 8, 1 << 40])
        put(mu.data, t + OB_SIZE, new)
        mu.touch(t)
        mu.note(f'{what}: {name} tuple size {old} -> {new}')
    else:
        # the frame size alone, or with the stack size it implies
        old = code_int(mu.data, c, 'co_framesize')
        new = rng.choice([old + 1, old - 1, 0, -1, 1 << 30, old * 4])
        put(mu.data, c + CODE_FIELDS['co_framesize'][0], new, 4)
        mu.note(f'{what}: co_framesize {old} -> {new}')
    mu.touch(c)
    return True


def mutate_objects(rng, model):
    mu = Mutant(model)
    done = 0
    harmless = True     # only fields the reader resets were changed
    for _ in range(rng.choice([1, 1, 1, 1, 2, 3])):
        i = pick_module(rng, model)
        op = rng.choice(['slot', 'slot', 'slot', 'header', 'header', 'str',
                         'str', 'code', 'code', 'seed'])
        if op == 'slot':
            changed = mutate_slot(rng, mu, i)
        elif op == 'header':
            changed = mutate_object_header(rng, mu, i)
        elif op == 'code':
            changed = mutate_code(rng, mu, i)
        elif not model.str_layout:
            changed = False
        else:
            if op == 'seed' and model.seed:
                t = rng.choice(model.seed)
            else:
                own = [t for t in model.by_module.get(i, ())
                       if model.type_of[t] == model.types.get('str')]
                shared = [t for t, ms in model.interners.items() if i in ms]
                if not own + shared:
                    continue
                t = rng.choice(own + shared)
            if mutate_string(rng, mu, t):
                done += 1
                mu.touch(t)
                continue
            mu.touch(t)
            changed = True
        if changed:
            done += 1
            harmless = False
    if not done:
        mutate_slot(rng, mu, rng.choice([m for m, s in enumerate(model.slots)
                                         if s]))
        harmless = False
    # Forged, only the fields documented as reset leave the output as it
    # was; damaged (no checksum redone), the checksums must catch the
    # rest, so the output must be the baseline either way.
    forge = rng.random() < 0.9
    mu.note('checksums redone' if forge else 'checksums left')
    expect = 'baseline' if harmless or not forge else 'any'
    return mu.finish(forge), mu.notes, expect, mu.level if forge else 0


ARCHIVE_MUTATORS = {
    'header': mutate_header,
    'index': mutate_index,
    'strtab': mutate_strtab,
    'records': mutate_records,
    'objects': mutate_objects,
}


# -- module lists -----------------------------------------------------------

LIST_LIMIT_LINE = 16384          # Python/cds_internal.h, for the edges
LIST_LIMIT_ENTRIES = 1000000
SAFE_NAMES = ['sys', 'builtins', '__main__', '_cds', 'site', 'os', 'json',
              'fzapp.nosuch', 'fzapp.consts.x', 'encodings.idna',
              'test', 'Ä', '\U0001d518', 'a' * 300, '.'.join(['a'] * 200),
              '_frozen_importlib', 'zipimport', 'this_is_not_a_module']


def mutate_list(rng, lst, case_dir):
    """Mutated module-list bytes (or None: the list is a special file made
    in 'case_dir'), and notes."""
    lines = lst.split(b'\n')
    header, entries = lines[0], [ln for ln in lines[1:] if ln]
    notes = []

    def some_entry():
        return rng.randrange(len(entries)) if entries else None

    def special_file(stem):
        kind = rng.choice(['fifo', 'zero', 'dir', 'loop', 'null'])
        path = os.path.join(case_dir, stem)
        if os.path.lexists(path):
            return path, 'name used twice'
        if kind == 'fifo':
            os.mkfifo(path)
        elif kind == 'zero':
            os.symlink('/dev/zero', path)
        elif kind == 'dir':
            os.mkdir(path)
        elif kind == 'loop':
            os.symlink(path, path)
        else:
            os.symlink('/dev/null', path)
        return path, kind

    if rng.random() < 0.06:
        path, kind = special_file('app.lst')
        return None, [f'the list is a {kind}']
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(14)
        k = some_entry()
        if op == 0:
            n = rng.choice([LIST_LIMIT_LINE - 2, LIST_LIMIT_LINE - 1,
                            LIST_LIMIT_LINE, LIST_LIMIT_LINE + 1,
                            65536, 1 << 20])
            name = b'fzapp.' + b'x' * max(0, n - 30)
            line = (name + b'\tsource\t/' + b'p' * max(0, n - len(name) - 9))
            entries.insert(rng.randrange(len(entries) + 1), line[:n])
            notes.append(f'a line of {n} bytes')
        elif op == 1 and k is not None:
            bad = rng.choice([b'\xff', b'\xc3', b'\xed\xa0\x80', b'\xc0\xaf',
                              b'\xf4\x90\x80\x80', b'\xe2\x82'])
            ln = entries[k]
            at = rng.randrange(len(ln) + 1)
            entries[k] = ln[:at] + bad + ln[at:]
            notes.append(f'line {k + 2}: invalid UTF-8 {bad!r} at {at}')
        elif op == 2:
            if k is not None and rng.random() < 0.8:
                ln = entries[k]
                at = rng.randrange(len(ln) + 1)
                entries[k] = ln[:at] + b'\0' + ln[at:]
                notes.append(f'line {k + 2}: a NUL at {at}')
            else:
                entries.append(b'\0' * rng.choice([1, 100, 20000]))
                notes.append('a line of NULs')
        elif op == 3 and rng.random() < 0.3:
            n = rng.choice([LIST_LIMIT_ENTRIES - len(entries),
                            LIST_LIMIT_ENTRIES - len(entries) + 1,
                            LIST_LIMIT_ENTRIES + 1000])
            entries.extend(b'm%d\tfrozen' % j for j in range(n))
            notes.append(f'{n} more entries')
        elif op == 4 and k is not None:
            parts = entries[k].split(b'\t')
            parts[1:2] = [rng.choice([b'', b'Source', b'frozen ', b'sourc',
                                      b'builtin', b'source\tsource',
                                      b'frozen\t/x', b'\xff', b'source\r'])]
            entries[k] = b'\t'.join(parts)
            notes.append(f'line {k + 2}: kind {parts[1]!r}')
        elif op == 5:
            stem = rng.choice(['zz', 'fzz'])
            path, kind = special_file(stem + '.py')
            entries.insert(rng.randrange(len(entries) + 1),
                           stem.encode() + b'\tsource\t' + os.fsencode(path))
            notes.append(f'entry {stem}: its source is a {kind}')
        elif op == 6 and k is not None and b'\tsource\t' in entries[k]:
            name = entries[k].split(b'\t')[0]
            path = rng.choice([b'/dev/zero', b'/dev/null', b'/',
                               b'/proc/self/mem', b'/nonexistent/x.py',
                               b'relative/x.py', b'/' + b'd/' * 3000 + b'x.py',
                               b'/etc/passwd', b'/tmp/../' + name + b'.py'])
            entries[k] = name + b'\tsource\t' + path
            notes.append(f'line {k + 2}: source path {path[:40]!r}')
        elif op == 7 and k is not None:
            dup = entries[k]
            if rng.random() < 0.5 and b'\tsource\t' in dup:
                dup = dup + b'x'
            entries.insert(rng.randrange(len(entries) + 1), dup)
            notes.append(f'line {k + 2} duplicated')
        elif op == 8 and k is not None:
            ln = entries[k]
            entries[k] = ln[:rng.randrange(len(ln) + 1)]
            notes.append(f'line {k + 2} truncated')
        elif op == 9:
            header = rng.choice([b'', b'# pycds module list 2',
                                 b'\xef\xbb\xbf' + header, header + b'\r',
                                 b'garbage'])
            notes.append(f'header {header[:30]!r}')
        elif op == 10:
            name = rng.choice(SAFE_NAMES).encode()
            kind = rng.choice([b'frozen', b'source'])
            line = name + b'\t' + kind
            if kind == b'source':
                line += b'\t' + rng.choice([
                    os.fsencode(os.path.join(case_dir, 'x.py')),
                    b'/nonexistent/' + name + b'.py'])
            entries.insert(rng.randrange(len(entries) + 1), line)
            notes.append(f'entry {line[:60]!r}')
        elif op == 11 and k is not None:
            parts = entries[k].split(b'\t')
            if parts[1:2] == [b'source']:
                entries[k] = parts[0] + b'\tfrozen'
            else:
                entries[k] = (parts[0] + b'\tsource\t/nonexistent/'
                              + parts[0] + b'.py')
            notes.append(f'line {k + 2}: kind swapped')
        elif op == 12:
            rng.shuffle(entries)
            sep = rng.choice([b'\r\n', b'\n\n', b'\n#\n'])
            body = sep.join([header] + entries)
            notes.append(f'lines shuffled, separated by {sep!r}')
            return body, notes
        else:
            blob = rng.randbytes(rng.randrange(1, 64))
            entries.insert(rng.randrange(len(entries) + 1), blob)
            notes.append(f'random bytes {blob[:16]!r}...')
    body = b'\n'.join([header] + entries)
    if rng.random() < 0.8:
        body += b'\n'
    else:
        notes.append('no final newline')
    return body, notes


# -- running ----------------------------------------------------------------

class Step:
    """One interpreter run of a case."""

    def __init__(self, name, args, timeout):
        self.name = name
        self.args = args
        self.timeout = timeout
        self.proc = None
        self.deadline = None
        self.returncode = None
        self.timed_out = False
        self.stdout = self.stderr = ''


def child_limits(memory_mb):
    def limit():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # runaway output stops with SIGXFSZ, a crash
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 20, 512 << 20))
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_AS,
                               (memory_mb << 20, memory_mb << 20))
    return limit


def read_text(path, limit=1 << 20):
    """The text of a child's output file, its start and end if long."""
    try:
        with open(path, 'rb') as f:
            data = f.read(limit + 1)
            if len(data) > limit:
                f.seek(-limit // 2, os.SEEK_END)
                data = data[:limit // 2] + b'\n[...]\n' + f.read()
    except OSError:
        return ''
    return data.decode('utf-8', 'replace')


SANITIZER = re.compile(r'ERROR: AddressSanitizer|\.c:\d+:\d+: runtime error:')
FATAL = re.compile(r'^Fatal Python error: (.*)$', re.MULTILINE)
CDS_WORD = re.compile(r'cds', re.IGNORECASE)


def tracebacks(text):
    """The Python tracebacks in 'text', each with its exception line."""
    # the archive's log lines interleave with a traceback on stderr
    lines = [ln for ln in text.splitlines()
             if not ln.startswith(('cds: ', 'FZINFO '))]
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].startswith('Traceback (most recent call last):'):
            j = i + 1
            while j < len(lines) and lines[j][:1] in (' ', '\t'):
                j += 1
            blocks.append('\n'.join(lines[i:j + 1]))
            i = j + 1
        else:
            i += 1
    return blocks


class Fuzzer:

    def __init__(self, args):
        self.args = args
        self.python = os.path.abspath(args.python)
        self.fmt = load_format(args.format)
        self.stats = {}
        self.reasons = {}
        # what is saved and listed: crashes, and the others worth a look
        self.found = {'crash': [], 'unchecked': [], 'undetected': []}
        self.fuzzer_errors = {}
        self.processes = 0
        self.saved = Counter()
        self.running = []
        self.done = []
        self.changed = False

    # -- set-up --

    def env(self, hash_seed):
        return clean_env(PYTHONHASHSEED=str(hash_seed),
                         PYTHONDONTWRITEBYTECODE='1', PYTHONFAULTHANDLER=None,
                         PYTHONMALLOC=None)

    def run_now(self, *args, timeout=120, cwd=None, env=None):
        return subprocess.run([self.python, *args], cwd=cwd or self.app,
                              env=env or self.env(0),
                              capture_output=True, timeout=timeout)

    def setup(self):
        """The application, its list, archive and baseline output."""
        args = self.args
        base = args.workdir or tempfile.gettempdir()
        self.work = os.path.realpath(tempfile.mkdtemp(prefix='pyfuzz-',
                                                      dir=base))
        self.app = os.path.join(self.work, 'app')
        self.cases = os.path.join(self.work, 'cases')
        os.mkdir(self.cases)
        for rel, text in APP.items():
            path = os.path.join(self.app, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w', encoding='utf-8') as f:
                f.write(textwrap.dedent(text).lstrip())
        self.main = os.path.join(self.app, 'main.py')
        st = os.stat(self.python)
        self.binary = (st.st_ino, st.st_size, st.st_mtime_ns)
        self.lst = os.path.join(self.work, 'app.lst')
        self.archive = os.path.join(self.work, 'app.arc')
        off = self.run_now('-X', 'cds=off', self.main)
        if off.returncode != 0:
            raise SetupError('the application fails without the archive:\n'
                             + off.stderr.decode('utf-8', 'replace'))
        self.baseline = off.stdout.decode('utf-8', 'replace')
        r = self.run_now('-X', 'cds=trace', '-X', f'cds_list={self.lst}',
                         self.main)
        if r.returncode != 0 or not os.path.exists(self.lst):
            raise SetupError('trace failed:\n'
                             + r.stderr.decode('utf-8', 'replace'))
        r = self.run_now('-X', 'cds=dump', '-X', f'cds_list={self.lst}',
                         '-X', f'cds_archive={self.archive}')
        if r.returncode != 0 or not os.path.exists(self.archive):
            raise SetupError('this build cannot dump an archive:\n'
                             + r.stderr.decode('utf-8', 'replace'))
        with open(self.archive, 'rb') as f:
            data = f.read()
        with open(self.lst, 'rb') as f:
            self.list_bytes = f.read()
        try:
            self.model = Model(self.fmt, data, self.app)
            problems = self_check(self.fmt, self.model)
        except Exception as exc:
            raise SetupError('format.py cannot read the archive: '
                             f'{exc!r}\n{traceback.format_exc()}')
        if problems:
            raise SetupError('format.py does not describe this archive '
                             '(rebuild the interpreter, or pass --format '
                             'with the reader of its revision): '
                             + ', '.join(problems))
        for w in self.model.warnings:
            print(f'warning: {w}', file=sys.stderr)
        # the -X options this build has
        self.extras = []
        for opt in EXTRA_OPTIONS:
            r = self.run_now('-X', opt, '-c', 'pass')
            if r.returncode == 0:
                self.extras.append(opt)
        # the unmutated archive gives the baseline, with each option
        for opts in [[]] + [[o] for o in self.extras]:
            step = self.share_step(self.archive, opts, 1, 'sanity')
            r = self.run_now(*step.args[1:], env=self.env(0))
            out = r.stdout.decode('utf-8', 'replace')
            info = parse_info(r.stderr.decode('utf-8', 'replace'))
            if out != self.baseline or not info.get('served'):
                raise SetupError(
                    f'the unmutated archive does not give the baseline '
                    f'output with {opts}:\n'
                    + r.stderr.decode('utf-8', 'replace')[-3000:])
        self.out = os.path.abspath(args.out or os.path.join(
            self.work, 'fuzz-crashes'))
        os.makedirs(self.out, exist_ok=True)

    # -- cases --

    def share_step(self, archive, opts, verbose, name='share'):
        args = [self.python, '-X', 'faulthandler', '-X', 'cds=share',
                '-X', f'cds_archive={archive}', '-X', f'cds_verbose={verbose}']
        for o in opts:
            args += ['-X', o]
        return Step(name, args + [self.main], self.args.timeout)

    def pick_options(self, rng, target):
        opts = []
        for o in self.extras:
            p = 0.75 if (o == 'cds_relocate' and target == 'records') else 0.4
            if rng.random() < p:
                opts.append(o)
        return opts

    def new_case(self, number):
        """Case 'number': its record, and the generator of its steps
        (it yields a Step, gets it back run, yields the next)."""
        rng = random.Random(f'{self.args.seed}/{number}')
        targets = self.targets
        target = rng.choices(targets,
                             [TARGET_WEIGHTS[t] for t in targets])[0]
        case_dir = os.path.join(self.cases, f'{number:06d}')
        os.mkdir(case_dir)
        record = {'case': number, 'target': target, 'dir': case_dir,
                  'hash_seed': rng.getrandbits(32), 'steps': [],
                  'notes': [], 'outcome': None, 'worst': None}
        return record, self.case_steps(rng, record)

    def case_steps(self, rng, record):
        try:
            if record['target'] == 'list':
                yield from self.list_case(rng, record, record['dir'])
            else:
                yield from self.archive_case(rng, record, record['dir'],
                                             record['target'])
        except FuzzerBug as exc:
            record['outcome'] = 'skipped'
            record['notes'].append(str(exc))
        except Exception:
            # a bug of this script: counted and shown once, never fatal
            record['outcome'] = 'skipped'
            record['notes'].append(f'case {record["target"]} failed:\n'
                                   + traceback.format_exc())

    def make_archive_case(self, rng, target, case_dir):
        try:
            return ARCHIVE_MUTATORS[target](rng, self.model)
        except Exception:
            tb = traceback.format_exc()
            raise FuzzerBug(f'mutator {target} failed:\n{tb}')

    def archive_case(self, rng, record, case_dir, target):
        data, notes, expect, level = self.make_archive_case(rng, target,
                                                            case_dir)
        record['notes'] = notes
        record['expect'] = expect
        record['level'] = level
        path = os.path.join(case_dir, 'app.arc')
        write_private(path, data)
        opts = self.pick_options(rng, target)
        record['options'] = opts
        step = self.share_step(path, opts, rng.choice([1, 1, 1, 2]))
        yield step
        self.judge(record, step, expect)

    def list_case(self, rng, record, case_dir):
        body, notes = mutate_list(rng, self.list_bytes, case_dir)
        record['notes'] = notes
        record['expect'] = 'baseline'
        lst = os.path.join(case_dir, 'app.lst')
        if body is not None:
            write_private(lst, body)
        archive = os.path.join(case_dir, 'out.arc')
        dump = Step('dump', [self.python, '-X', 'faulthandler',
                             '-X', 'cds=dump', '-X', f'cds_list={lst}',
                             '-X', f'cds_archive={archive}',
                             '-X', 'cds_verbose'], self.args.timeout)
        yield dump
        self.judge(record, dump, None)
        record['options'] = self.pick_options(rng, 'list')
        if dump.returncode == 0 and os.path.isfile(archive):
            share = self.share_step(archive, record['options'], 1,
                                    'share-dumped')
            yield share
            self.judge(record, share, 'baseline')
        # the trace merges into a fresh copy of the mutated list
        merged = os.path.join(case_dir, 'merged.lst')
        if body is not None:
            write_private(merged, body)
        else:
            merged = lst     # the special file itself
        trace = Step('trace', [self.python, '-X', 'faulthandler',
                               '-X', 'cds=trace', '-X', f'cds_list={merged}',
                               '-X', 'cds_verbose', self.main],
                     self.args.timeout)
        yield trace
        self.judge(record, trace, 'baseline')

    # -- outcomes --

    def judge(self, record, step, expect):
        """Classify one step; the case's outcome is its worst step's."""
        record['steps'].append(step)
        crash = crash_kind(step, self.hide_dirs(), expect)
        for line in step.stderr.splitlines():
            m = re.match(r"cds: (?:archive '.*' not used|module \S+): (.*)",
                         line)
            if m:
                reason = m.group(1)
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
        info = parse_info(step.stderr)
        if crash:
            step.crash = crash
            level = record.get('level', 0)
            covered = level == 0 or (level == 1 and 'cds_verify'
                                     in record.get('options', ()))
            outcome = 'crash' if covered or self.args.strict else 'unchecked'
        elif getattr(step, 'not_started', False):
            outcome = 'error'
        elif expect is None:         # a dump: exit 0 or 1, nothing else
            outcome = ('served' if step.returncode == 0
                       else 'refused' if step.returncode == 1 else 'error')
        elif step.returncode == 0 and step.stdout == self.baseline:
            outcome = ('served' if step.name == 'trace'
                       or info.get('active') and not info.get('rejected')
                       else 'refused')
        else:
            outcome = 'error' if expect == 'any' else 'undetected'
        order = [None, 'served', 'refused', 'error', 'undetected',
                 'unchecked', 'crash']
        if order.index(outcome) > order.index(record['outcome']):
            record['outcome'] = outcome
            record['worst'] = step

    def hide_dirs(self):
        return [self.work, ROOT, sys.prefix, os.path.dirname(os.__file__),
                os.path.dirname(self.python)]

    def finish_case(self, record):
        target, outcome = record['target'], record['outcome']
        counts = self.stats.setdefault(target, {})
        counts['runs'] = counts.get('runs', 0) + 1
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == 'skipped':
            key = record['notes'][-1].splitlines()[-1]
            if key not in self.fuzzer_errors:
                print(f'fuzzer error (case {record["case"]}): '
                      f'{record["notes"][-1]}', file=sys.stderr)
            self.fuzzer_errors[key] = self.fuzzer_errors.get(key, 0) + 1
        if outcome in self.found:
            saved = self.save(record)
            self.found[outcome].append((record, saved))
            if outcome == 'crash' or len(self.found[outcome]) <= 3:
                print(f'{outcome}: case {record["case"]} ({target}, '
                      f'{getattr(record["worst"], "crash", "")}, '
                      f'{" ".join(record.get("options", []))}): '
                      f'{"; ".join(record["notes"])}'
                      f'{" -> " + saved if saved else ""}', flush=True)
        if self.args.replay is not None:
            self.show(record)
        if not (self.args.keep or self.args.replay is not None):
            rmtree(record['dir'])

    def save(self, record):
        """Copy the case's input with a script to rerun it; its path."""
        if self.saved[record['outcome']] >= self.args.max_saved:
            return None
        try:
            return self.save_case(record)
        except OSError as exc:
            print(f'cannot save case {record["case"]}: {exc}',
                  file=sys.stderr)
            return None

    def save_case(self, record):
        self.saved[record['outcome']] += 1
        sub = '' if record['outcome'] == 'crash' else record['outcome']
        dest = os.path.join(self.out, sub, f'{record["target"]}-'
                            f'{self.args.seed}-{record["case"]:06d}')
        copy_tree(record['dir'], dest)
        step = record['worst']
        args = [a.replace(record['dir'], dest) for a in step.args]
        with open(os.path.join(dest, 'cmd.sh'), 'w') as f:
            f.write('#!/bin/sh\n')
            f.write(f'# pycds fuzz: seed {self.args.seed}, case '
                    f'{record["case"]}, target {record["target"]}, '
                    f'step {step.name}: {record["outcome"]} '
                    f'{getattr(step, "crash", "")}\n')
            f.write('# the archive is only valid for this interpreter '
                    'binary and this application directory\n')
            for note in record['notes']:
                f.write(f'#   {note}\n')
            f.write(f'cd {shlex.quote(self.app)} || exit 1\n')
            f.write(f'exec env PYTHONHASHSEED={record["hash_seed"]} '
                    'PYTHONDONTWRITEBYTECODE=1 '
                    + ' '.join(shlex.quote(a) for a in args) + '\n')
        os.chmod(os.path.join(dest, 'cmd.sh'), 0o755)
        for s in record['steps']:
            for what in ('stdout', 'stderr'):
                with open(os.path.join(dest, f'{s.name}.{what}.txt'), 'w',
                          encoding='utf-8', errors='replace') as f:
                    f.write(getattr(s, what))
        with open(os.path.join(dest, 'case.json'), 'w') as f:
            json.dump({'seed': self.args.seed, 'case': record['case'],
                       'target': record['target'],
                       'outcome': record['outcome'],
                       'crash': getattr(step, 'crash', None),
                       'step': step.name, 'returncode': step.returncode,
                       'options': record.get('options', []),
                       'level': LEVELS[record.get('level', 0)],
                       'hash_seed': record['hash_seed'],
                       'notes': record['notes'], 'args': args,
                       'python': self.python, 'app': self.app}, f, indent=1)
        return dest

    def show(self, record):
        print(json.dumps({k: record.get(k) for k in
                          ('case', 'target', 'outcome', 'options', 'notes',
                           'expect', 'hash_seed', 'dir')}, indent=1))
        for s in record['steps']:
            print(f'--- {s.name}: exit {s.returncode}'
                  f'{" (timeout)" if s.timed_out else ""}: '
                  + ' '.join(shlex.quote(a) for a in s.args))
            print(s.stdout[-2000:] if s.stdout != self.baseline
                  else '[baseline output]')
            print(s.stderr[-4000:])

    # -- the loop --

    def start(self, steps, step, record):
        # output to files, not pipes: no thread, no pipe to drain
        step.out = os.path.join(record['dir'], f'{step.name}.out')
        step.err = os.path.join(record['dir'], f'{step.name}.err')
        try:
            with open(step.out, 'wb') as out, open(step.err, 'wb') as err:
                step.proc = subprocess.Popen(
                    step.args, cwd=self.app,
                    env=self.env(record['hash_seed']),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    start_new_session=True,
                    preexec_fn=child_limits(self.args.memory))
        except (OSError, subprocess.SubprocessError) as exc:
            # the interpreter being rebuilt, say: not the case's fault
            step.returncode = 127
            step.not_started = True
            step.stderr = f'cannot run the interpreter: {exc}'
            self.done.append((steps, step, record))
            return
        step.deadline = time.monotonic() + step.timeout
        self.processes += 1
        self.running.append((steps, step, record))

    def advance(self, steps, value, record):
        """Send the finished step back (None to begin); start the next
        one, or finish the case."""
        try:
            step = steps.send(value)
        except StopIteration:
            if record['outcome'] is None:
                record['outcome'] = 'skipped'
            self.finish_case(record)
            return
        self.start(steps, step, record)

    def poll(self):
        still = []
        for steps, step, record in self.running:
            rc = step.proc.poll()
            if rc is None and time.monotonic() > step.deadline:
                step.timed_out = True
                kill_group(step.proc)
                rc = step.proc.wait()
            if rc is None:
                still.append((steps, step, record))
                continue
            step.returncode = rc
            step.stdout = read_text(step.out)
            step.stderr = read_text(step.err)
            self.done.append((steps, step, record))
        self.running = still

    def binary_changed(self):
        """Whether the interpreter was replaced (rebuilt) since set-up:
        every archive is then another build's, and each run meaningless."""
        try:
            st = os.stat(self.python)
            now = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            now = None
        if now != self.binary:
            self.changed = True
        return self.changed

    def run(self):
        args = self.args
        self.targets = args.targets
        t0 = time.monotonic()
        end = t0 + args.seconds
        number = args.replay if args.replay is not None else 0
        next_check = t0

        def may_start():
            if args.replay is not None:
                return number == args.replay
            return time.monotonic() < end and not self.changed

        try:
            while True:
                if time.monotonic() > next_check:
                    next_check = time.monotonic() + 2
                    self.binary_changed()
                while len(self.running) < args.jobs and may_start():
                    record, steps = self.new_case(number)
                    number += 1
                    self.advance(steps, None, record)
                self.poll()
                while self.done:
                    batch, self.done = self.done, []
                    for steps, step, record in batch:
                        self.advance(steps, step, record)
                if not self.running and not may_start():
                    break
                if self.running:
                    time.sleep(0.005)
        except KeyboardInterrupt:
            for _, step, _ in self.running:
                kill_group(step.proc)
                step.proc.wait()
            print('interrupted', file=sys.stderr)
        self.elapsed = time.monotonic() - t0
        self.cases_run = number - (args.replay or 0)

    # -- the report --

    def summary(self):
        cols = ['runs', 'served', 'refused', 'error', 'undetected',
                'unchecked', 'crash', 'skipped']
        lines = [f'pycds fuzz: seed {self.args.seed}, {self.elapsed:.1f} s, '
                 f'{self.cases_run} cases, {self.processes} processes '
                 f'({self.processes / max(self.elapsed, 1e-9):.1f}/s), '
                 f'jobs {self.args.jobs}, python {self.python}',
                 f'{"target":<9}' + ''.join(f'{c:>11}' for c in cols)]
        total = {}
        for t in self.targets:
            counts = self.stats.get(t, {})
            for c in cols:
                total[c] = total.get(c, 0) + counts.get(c, 0)
            lines.append(f'{t:<9}' + ''.join(f'{counts.get(c, 0):>11}'
                                             for c in cols))
        lines.append(f'{"total":<9}' + ''.join(f'{total.get(c, 0):>11}'
                                               for c in cols))
        if self.reasons:
            lines.append('reasons given (-X cds_verbose), most frequent:')
            for reason, n in sorted(self.reasons.items(),
                                    key=lambda kv: -kv[1])[:12]:
                lines.append(f'  {n:6}  {reason}')
        titles = {
            'crash': 'crashes',
            'unchecked': 'crashes in what the checks do not cover with '
                         'the options used (documented: -X cds_verify '
                         'checks names and direct constants, nothing '
                         'checks nested constants)',
            'undetected': 'undetected: not the baseline output where it '
                          'had to be (damage, or fields the reader resets)'}
        for outcome, title in titles.items():
            found = self.found[outcome]
            if not found:
                continue
            lines.append(f'{title}:')
            for record, saved in found[:40]:
                step = record['worst']
                lines.append(f'  case {record["case"]} {record["target"]} '
                             f'{step.name} {getattr(step, "crash", "")} '
                             f'{record.get("options", [])} '
                             f'[{LEVELS[record.get("level", 0)]}]: '
                             f'{"; ".join(record["notes"])}')
                if saved:
                    lines.append(f'      {saved}/cmd.sh')
        if self.changed:
            lines.append(f'warning: {self.python} changed during the run '
                         '(rebuilt?): the run stopped early, and the runs '
                         'near the change may be meaningless')
        crashes = self.found['crash']
        lines.append(f'crashes: {len(crashes)}'
                     + (f' (saved in {self.out})' if crashes else ''))
        return '\n'.join(lines)


class SetupError(Exception):
    pass


class FuzzerBug(Exception):
    pass


def parse_info(stderr):
    for line in reversed(stderr.splitlines()):
        if line.startswith('FZINFO '):
            try:
                return json.loads(line[7:])
            except ValueError:
                return {}
    return {}


def crash_kind(step, hide, expect):
    """Why the run is a crash, or None.  A "Fatal Python error" with an
    exit status (no signal) is how start-up fails when forged content
    raises in a start-up module: a crash only where the content could not
    change ('expect' is not 'any'), or if it names the archive code."""
    if step.timed_out:
        return 'timeout'
    if step.returncode is not None and step.returncode < 0:
        try:
            return signal.Signals(-step.returncode).name
        except ValueError:
            return f'signal {-step.returncode}'
    if SANITIZER.search(step.stderr):
        return 'sanitizer'
    m = FATAL.search(step.stderr)
    if m and (expect != 'any' or CDS_WORD.search(m.group(1))):
        return 'Fatal Python error'
    for block in tracebacks(step.stderr):
        for d in sorted(hide, key=len, reverse=True):
            if d:
                block = block.replace(d, '<dir>')
        if CDS_WORD.search(block):
            return 'cds traceback'
    return None


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def write_private(path, data):
    """The archive must be its owner's only (share mode refuses others')."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, 'wb') as f:
        f.write(data)


def copy_tree(src, dest):
    """Copy a case directory: FIFOs and links as they are."""
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dest, name)
        st = os.lstat(s)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(d)
        elif stat.S_ISDIR(st.st_mode):
            copy_tree(s, d)
        elif stat.S_ISREG(st.st_mode):
            shutil.copy2(s, d)


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description='Mutation fuzzer of pycds archives and module lists.')
    p.add_argument('--seconds', type=float, default=60,
                   help='how long to start new cases (default 60)')
    p.add_argument('--seed', type=int, default=None,
                   help='the seed (default: random, printed)')
    p.add_argument('--targets', default=','.join(TARGETS),
                   help='comma-separated, of ' + ', '.join(TARGETS))
    p.add_argument('--out', help='where crashing inputs are saved '
                   '(default: fuzz-crashes in the work directory)')
    p.add_argument('--jobs', type=int, default=1,
                   help='subprocesses in parallel (default 1)')
    p.add_argument('--timeout', type=float, default=10,
                   help='seconds before a run counts as a hang (default 10)')
    p.add_argument('--memory', type=int, default=None,
                   help='address-space limit of each run in MB (default '
                   '4096, none in a sanitizer build; 0: none)')
    p.add_argument('--max-saved', type=int, default=50,
                   help='inputs saved at most, of each outcome (default 50)')
    p.add_argument('--replay', type=int, default=None, metavar='CASE',
                   help='run only case CASE of the seed, and show it')
    p.add_argument('--strict', action='store_true',
                   help='count crashes in what the checks do not cover '
                   '(nested constants; direct ones without -X cds_verify) '
                   'as crashes')
    p.add_argument('--keep', action='store_true',
                   help='keep every case directory and the work directory')
    p.add_argument('--workdir', help='where to make the work directory '
                   '(default: the temporary directory)')
    p.add_argument('--python', default=sys.executable,
                   help='the interpreter to fuzz (default: this one)')
    p.add_argument('--format', help='the path of the format reader to use '
                   '(default: test.test_cds.format)')
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(',') if t.strip()]
    bad = [t for t in args.targets if t not in TARGETS]
    if bad or not args.targets:
        p.error(f'unknown targets {bad}: choose among {", ".join(TARGETS)}')
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    if args.memory is None:
        flags = sysconfig.get_config_var('PY_CFLAGS') or ''
        args.memory = 0 if '-fsanitize' in flags else 4096
    args.jobs = max(1, args.jobs)
    return args


def main(argv=None):
    args = parse_args(argv)
    fuzzer = Fuzzer(args)
    try:
        fuzzer.setup()
    except (SetupError, OSError) as exc:
        print(f'pycds fuzz: set-up failed: {exc}', file=sys.stderr)
        return 2
    print(f'pycds fuzz: seed {args.seed}, targets {",".join(args.targets)}, '
          f'options {" ".join(fuzzer.extras)}, work directory '
          f'{fuzzer.work}, crashes to {fuzzer.out}', flush=True)
    try:
        fuzzer.run()
    finally:
        if sum(fuzzer.saved.values()):
            print(f'work directory kept (the saved cases need its '
                  f'application): {fuzzer.work}', file=sys.stderr)
        elif args.keep or args.replay is not None:
            print(f'work directory kept: {fuzzer.work}', file=sys.stderr)
        else:
            rmtree(fuzzer.work)
    print(fuzzer.summary())
    return 1 if fuzzer.found['crash'] else 0


if __name__ == '__main__':
    sys.exit(main())
