"""Archives, module lists and their temporary and lock files as untrusted
input: files in directories other users can write must not redirect a
write, hang the process or exhaust its memory (issue 12, first step)."""

import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import (
    AppTestCase, INFO, LIST_HEADER, clean_env, dump_args, read_list,
    run_python, trace_args, write_list)

TIMEOUT = 60        # what a hang would exceed; none of these takes long


class WhoseArchiveTests(AppTestCase):
    """An archive another user could have written is not mapped: it runs
    as this process's code."""

    ARCHIVE_PER_CLASS = True

    def copy(self, mode=0o644, dir_mode=0o700):
        d = tempfile.mkdtemp(dir=self.scratch)
        path = os.path.join(d, 'app.cds')
        shutil.copyfile(self.archive, path)
        os.chmod(path, mode)
        os.chmod(d, dir_mode)
        return path

    def reason(self, archive):
        r, info = self.share_info('-X', 'cds_verbose', archive=archive)
        return info['reason'] if not info['active'] else None

    def test_own_archive_used(self):
        self.assertIsNone(self.reason(self.copy()))
        # a sticky directory others can write (as /tmp) is fine
        self.assertIsNone(self.reason(self.copy(dir_mode=0o1777)))

    def test_writable_by_others(self):
        self.assertEqual(self.reason(self.copy(mode=0o666)),
                         'writable by other users')
        self.assertEqual(self.reason(self.copy(mode=0o664)),
                         'writable by other users')

    def test_directory_writable_by_others(self):
        self.assertEqual(self.reason(self.copy(dir_mode=0o777)),
                         'its directory is writable by other users')

    @unittest.skipUnless(os.geteuid() == 0, 'needs root to give a file away')
    def test_planted_by_another_user(self):
        # another user's archive where this process looks (a shared
        # directory): never mapped, whatever it holds
        import pwd
        nobody = pwd.getpwnam('nobody')
        path = self.copy(dir_mode=0o1777)
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.assertEqual(self.reason(path), 'owned by another user')
        r = self.python('-c', 'import _cds, json; print(json.dumps(_cds.info()))',
                        env=clean_env(PYTHONCDS='share',
                                      PYTHONCDSARCHIVE=path))
        self.assertFalse(json.loads(r.stdout)['active'])


class SharedStringFieldTests(AppTestCase):
    """The fields of a shared string that the process writes (the cached
    hash, the interned state) are outside every checksum: whatever the file
    holds there, the program runs as without the archive."""

    ARCHIVE_PER_CLASS = True

    def damaged(self, change):
        """A copy of the archive with change(data, offset) applied to every
        shared string (but the start-up ones) that cdsapp's modules use."""
        with open(self.archive, 'rb') as f:
            data = bytearray(f.read())
        h = cdsformat.read_header(data)
        seed_end = h['str_offset'] + (h['seed_size'] + 15) // 16 * 16
        targets = set()
        for e in cdsformat.read_index(data):
            if not e['name'].startswith('cdsapp'):
                continue
            for off, kind in cdsformat.fixups(data, e):
                if kind == 'intern':
                    target, = struct.unpack_from('<Q', data, off)
                    target -= h['preferred_base']
                    if target >= seed_end:
                        targets.add(target)
        self.assertGreater(len(targets), 20)
        for t in targets:
            change(data, t)
        # still valid: no checksum covers these fields
        self.assertEqual(cdsformat.validate(data), [])
        path = os.path.join(self.scratch, 'damaged.cds')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def check_runs_as_without(self, archive):
        r = self.share(self.main, archive=archive)
        self.assertEqual(r.stdout, self.expected)
        r, info = self.share_info(code=self.app_code('import cdsapp.shapes'),
                                  archive=archive)
        self.assertTrue(info['active'])
        self.assertGreater(info['served'], 0)

    def test_cached_hash(self):
        # a wrong cached hash would file the identifiers under the wrong
        # hash in the interned dict and in the namespaces that use them
        def change(data, t):
            struct.pack_into('<q', data, t + 24, 0x5eed)
        self.check_runs_as_without(self.damaged(change))


# Object layouts of 64-bit 3.13 (test_layout checks them on the running
# interpreter and on an archive).  PyCodeObject (Include/cpython/code.h):
CO_CONSTS, CO_NAMES, CO_FRAMESIZE, CO_FILENAME, CO_LINETABLE = (
    24, 32, 76, 112, 136)
CO_EXCEPTIONTABLE, CO_STACKSIZE, CO_NLOCALSPLUS = 40, 64, 72
CO_LOCALSPLUSNAMES, CO_LOCALSPLUSKINDS, CO_NAME, CO_QUALNAME = (
    96, 104, 120, 128)
CO_POINTERS = (CO_CONSTS, CO_NAMES, CO_EXCEPTIONTABLE, CO_LOCALSPLUSNAMES,
               CO_LOCALSPLUSKINDS, CO_FILENAME, CO_NAME, CO_QUALNAME,
               CO_LINETABLE)
# the per-process state, zero in an archive (cds-format.rst); co_extra is
# the last field before the bytecode
CO_RUNTIME = {'co_weakreflist': 144, 'co_executors': 152, '_co_cached': 160,
              '_co_monitoring': 176, 'co_extra': 192}
# object headers, a tuple's items, a compact str (format.py: the
# characters of an ASCII one follow its header, those of another its
# UTF-8 cache, utf8_length and utf8)
OB_REFCNT, OB_TYPE, OB_SIZE = 0, 8, 16
TUPLE_ITEMS = 24
STR_LENGTH, STR_STATE = 16, 32
STR_UTF8_LENGTH, STR_UTF8 = 40, 48
STATE_ASCII = 1 << 6
IMMORTAL = 0xFFFFFFFF       # the ob_refcnt of every archived object
# the small ints: an array of one-digit PyLongObject, 8-aligned
SMALL_INT_SIZE = (int.__basicsize__ + int.__itemsize__ + 7) // 8 * 8


class ForgedArchiveTests(AppTestCase):
    """Archives whose checksums were recomputed after a change (what an
    attacker can do with the documented algorithm): the forged module is
    refused, the rest of the program runs, nothing crashes."""

    ARCHIVE_PER_CLASS = True

    def forge(self, mutate, name):
        data = bytearray(self.good)
        h = cdsformat.read_header(data)
        entries = cdsformat.read_index(data)
        i, e = next((i, e) for i, e in enumerate(entries) if e['name'] == name)
        mutate(data, h, e)
        # every checksum redone
        e['checksum'] = cdsformat.module_checksum(data, e)
        rs = h['reloc_offset'] + 8 * e['reloc_start']
        e['reloc_checksum'] = cdsformat.checksum(
            data[rs:rs + 8 * e['reloc_count']])
        fields = dict(e, kind={'source': 1, 'frozen': 2}[e['kind']])
        cdsformat.ENTRY.pack_into(
            data, h['index_offset'] + i * cdsformat.ENTRY.size,
            *(fields[k] for k in cdsformat.ENTRY_FIELDS))
        index = data[h['index_offset']:h['strtab_offset']]
        strtab = data[h['strtab_offset']:h['strtab_offset'] + h['strtab_size']]
        data = cdsformat.set_header(data, index_checksum=cdsformat.checksum(
            strtab, cdsformat.checksum(index)))
        path = os.path.join(self.scratch, 'forged.cds')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def check_refused(self, mutate, name='cdsapp.shapes', relocate=False,
                      options=(), code=None):
        """Run the application on the forged archive (and 'code', what it
        does not do, after putting it on sys.path): each runs as without
        the archive, the module NAME refused.  Return the application's
        process."""
        path = self.forge(mutate, name)
        options = [*options, *(['-X', 'cds_relocate'] if relocate else [])]
        programs = [([self.main], self.expected)]
        if code is not None:
            code = self.app_code(code)
            programs.append((['-c', code], self.python('-c', code).stdout))
        runs = [(self.share('-X', 'cds_verbose', *options, *program,
                            archive=path, check=False, timeout=120), expected)
                for program, expected in programs]
        # the exit statuses first: a crash is the failure to report
        for r, expected in runs:
            self.assertEqual(r.returncode, 0, r.stderr)
        for r, expected in runs:
            self.assertEqual(r.stdout, expected)
            self.assertRegex(r.stderr,
                             f'cds: module {name}: .*(corrupt archive)')
        return runs[0][0]

    @staticmethod
    def u64(data, off):
        return struct.unpack_from('<Q', data, off)[0]

    def test_entry_code_is_not_code(self):
        def mutate(data, h, e):
            # the module's "code object" is its constants tuple
            e['code'] = self.u64(data, e['code'] + CO_CONSTS) - h['preferred_base']
        self.check_refused(mutate)

    def test_consts_is_bytes(self):
        def mutate(data, h, e):
            struct.pack_into('<Q', data, e['code'] + CO_CONSTS,
                             self.u64(data, e['code'] + CO_LINETABLE))
        self.check_refused(mutate)
        self.check_refused(mutate, relocate=True)

    def test_names_outside_the_archive(self):
        def mutate(data, h, e):
            struct.pack_into('<Q', data, e['code'] + CO_NAMES,
                             h['preferred_base'] + h['file_size'] + (1 << 30))
        self.check_refused(mutate)

    def test_frame_size(self):
        def mutate(data, h, e):
            off = e['code'] + CO_FRAMESIZE
            struct.pack_into('<i', data, off,
                             struct.unpack_from('<i', data, off)[0] + 100000)
        self.check_refused(mutate)

    def test_function_code(self):
        # a function's code object, reached through the module's constants
        def mutate(data, h, e):
            codes = [off for off, kind in cdsformat.fixups(data, e)
                     if kind == 'code']
            self.assertTrue(codes)
            for off in codes:
                struct.pack_into('<Q', data, off + CO_NAMES,
                                 self.u64(data, off + CO_FILENAME))
        self.check_refused(mutate)

    def test_frozenset_fixup_not_a_tuple(self):
        def mutate(data, h, e):
            sets = [off for off, kind in cdsformat.fixups(data, e)
                    if kind == 'frozenset']
            self.assertTrue(sets)
            struct.pack_into('<Q', data, sets[0],
                             self.u64(data, e['code'] + CO_LINETABLE))
        self.check_refused(mutate, name='cdsapp.consts')

    def test_deep_checks(self):
        # a name that is not a string, and a constant out of its place:
        # only -X cds_verify checks them one by one
        def name_is_bytes(data, h, e):
            names = self.u64(data, e['code'] + CO_NAMES) - h['preferred_base']
            struct.pack_into('<Q', data, names + 24 + 8,
                             self.u64(data, e['code'] + CO_LINETABLE))
        self.check_refused(name_is_bytes, options=['-X', 'cds_verify'])
        r = self.share('-X', 'cds_verify=2', '-c', 'pass', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('-X cds_verify', r.stderr)

    def test_fixup_offset_wraps_around(self):
        # an offset whose end wraps past 2**64 was taken as inside the
        # module, and the fixup wrote outside the mapping
        def mutate(data, h, e):
            k = [kind for off, kind in cdsformat.fixups(data, e)].index('code')
            fs = (h['fixup_offset']
                  + cdsformat.FIXUP.size * (e['fixup_start'] + k))
            struct.pack_into('<Q', data, fs, (1 << 64) - 8 | 3)   # code
        self.check_refused(mutate)

    def set_relocations(self, data, h, e, slots):
        rs = h['reloc_offset'] + 8 * e['reloc_start']
        words = cdsformat.encode_relocations(e, slots)
        self.assertEqual(len(words), e['reloc_count'])
        struct.pack_into(f'<{len(words)}Q', data, rs, *words)

    def test_relocation_missing(self):
        # the bit of co_consts cleared: the slot keeps the address laid out
        # for the preferred base, not where the tuple is
        def mutate(data, h, e):
            slots = cdsformat.relocations(data, e)
            slots.remove(e['code'] + CO_CONSTS)
            self.set_relocations(data, h, e, slots)
        self.check_refused(mutate)
        self.check_refused(mutate, relocate=True)

    def test_relocation_of_a_number(self):
        # a bit set on co_argcount and its neighbours (ints, not pointers):
        # moving them by the displacement makes them garbage
        def mutate(data, h, e):
            slots = cdsformat.relocations(data, e)
            slots.append(e['code'] + CO_FRAMESIZE & ~7)
            self.set_relocations(data, h, e, sorted(set(slots)))
        self.check_refused(mutate)

    def test_relocation_past_the_end_of_a_range(self):
        # a bit of the last word of a run beyond its range: it would move
        # 8 bytes of the next module
        def mutate(data, h, e):
            rs = h['reloc_offset'] + 8 * e['reloc_start']
            for r, start, end, first, n in cdsformat.reloc_runs(e):
                last = (start & ~7) + 8 * 64 * n - 8
                if n and last >= end:
                    at = rs + 8 * (first + n - 1)
                    struct.pack_into('<Q', data, at,
                                     self.u64(data, at) | (1 << 63))
                    self.assertTrue(any('relocation outside the module' in p
                                        for p in cdsformat.validate(data)))
                    return
            self.skipTest('every run ends on its range\'s end')
        r = self.check_refused(mutate)
        self.assertIn('cds: module cdsapp.shapes: bad relocation '
                      '(corrupt archive)', r.stderr)

    def test_relocation_bitmap_of_another_size(self):
        def mutate(data, h, e):
            e['reloc_count'] -= 1
        r = self.check_refused(mutate)
        self.assertIn('cds: module cdsapp.shapes: bad index entry', r.stderr)

    # -- what the structural checks refuse (cds_verify.c): what a fuzzer
    # of forged archives crashed the interpreter with before they did

    @staticmethod
    def u32(data, off):
        return struct.unpack_from('<I', data, off)[0]

    @staticmethod
    def i32(data, off):
        return struct.unpack_from('<i', data, off)[0]

    def ptr(self, data, h, off):
        """The file offset that the pointer at 'off' refers to (outside
        the file: one of the interpreter's static objects)."""
        return self.u64(data, off) - h['preferred_base']

    def items(self, data, h, t):
        """The file offsets of the items of the tuple at 't'."""
        return [self.ptr(data, h, t + TUPLE_ITEMS + 8 * k)
                for k in range(self.u64(data, t + OB_SIZE))]

    def code_objects(self, data, h, e):
        """The file offsets of the module's code objects: its own and,
        recursively, those among their constants."""
        code_type = self.u64(data, e['code'] + OB_TYPE)
        found, todo = [], [e['code']]
        while todo:
            c = todo.pop()
            if c in found:
                continue
            found.append(c)
            for item in self.items(data, h, self.ptr(data, h, c + CO_CONSTS)):
                if (e['code_start'] <= item < e['code_end']
                        and self.u64(data, item + OB_TYPE) == code_type):
                    todo.append(item)
        return found

    def ascii_text(self, data, t):
        """The text of the archived ASCII string at 't', else None."""
        if not (0 <= t < len(data)
                and self.u32(data, t + STR_STATE) & STATE_ASCII):
            return None
        start = t + cdsformat.ASCII_HEADER
        return bytes(data[start:start + self.u64(data, t + STR_LENGTH)]
                     ).decode('ascii')

    def test_layout(self):
        # the offsets above: on this interpreter...
        import types
        self.assertEqual(types.CodeType.__basicsize__,
                         CO_RUNTIME['co_extra'] + 8)
        self.assertEqual(tuple.__basicsize__, TUPLE_ITEMS)
        self.assertEqual(sys.getsizeof('ab'), cdsformat.ASCII_HEADER + 3)
        self.assertEqual((STR_UTF8_LENGTH, STR_UTF8 + 8),
                         (cdsformat.ASCII_HEADER, cdsformat.COMPACT_HEADER))
        # ... and in the archive, in every code object of the application:
        # immortal, a relocation record for each pointer, none of the
        # per-process state, as many local names and kinds as
        # co_nlocalsplus (a tuple and a bytes object, as co_consts and
        # co_linetable), a frame of the locals, the stack and specials of
        # one size
        data = self.good
        h = cdsformat.read_header(data)
        specials = set()
        locals_seen = 0
        for e in cdsformat.read_index(data):
            if not e['name'].startswith('cdsapp'):
                continue
            slots = {r & ~1 for r in cdsformat.relocations(data, e)}
            for c in self.code_objects(data, h, e):
                self.assertEqual(self.u64(data, c + OB_REFCNT), IMMORTAL)
                for off in CO_POINTERS:
                    self.assertIn(c + off, slots)
                for off in CO_RUNTIME.values():
                    self.assertEqual(self.u64(data, c + off), 0)
                    self.assertNotIn(c + off, slots)
                n = self.i32(data, c + CO_NLOCALSPLUS)
                for off, like in ((CO_LOCALSPLUSNAMES, CO_CONSTS),
                                  (CO_LOCALSPLUSKINDS, CO_LINETABLE)):
                    t = self.ptr(data, h, c + off)
                    if cdsformat.in_module(e, t):
                        locals_seen += 1
                        self.assertEqual(self.u64(data, t + OB_SIZE), n)
                        self.assertEqual(
                            self.u64(data, t + OB_TYPE),
                            self.u64(data, self.ptr(data, h, c + like)
                                     + OB_TYPE))
                specials.add(self.i32(data, c + CO_FRAMESIZE) - n
                             - self.i32(data, c + CO_STACKSIZE))
        self.assertGreater(locals_seen, 4)
        self.assertEqual(len(specials), 1)

    RUNTIME_STATE_CODE = '''
        import sys, weakref
        from cdsapp import shapes
        co = shapes.fail.__code__
        print(co.co_varnames, co.co_code == co.co_code,
              weakref.ref(co)() is co)
        mon = sys.monitoring
        mon.use_tool_id(3, 'test')
        lines = []
        mon.register_callback(3, mon.events.LINE,
                              lambda code, line: lines.append(line))
        mon.set_local_events(3, co, mon.events.LINE)
        try:
            shapes.fail()
        except ValueError:
            pass
        print(len(lines))
    '''

    def test_per_process_state(self):
        # what a process sets in a code object as it uses it (weak
        # references, the cached co_code and co_varnames, monitoring,
        # executors, extra data): the pointers would be followed, and
        # freed with the copies of the module's and class bodies' code
        # objects that the reader serves
        for field, off in CO_RUNTIME.items():
            def mutate(data, h, e, off=off):
                for c in self.code_objects(data, h, e):
                    self.assertEqual(self.u64(data, c + off), 0)
                    struct.pack_into('<Q', data, c + off, 8)
            with self.subTest(field=field):
                self.check_refused(mutate, code=self.RUNTIME_STATE_CODE)

    def test_shared_string_not_ascii(self):
        # a shared string whose ascii bit is cleared is a latin-1 string
        # whose UTF-8 cache (utf8_length, utf8) is its characters and what
        # follows them: here the class name 'Square' (type() takes its
        # UTF-8), 0xffffffff (the next string's ob_refcnt) as utf8
        def mutate(data, h, e):
            targets = {self.ptr(data, h, off)
                       for off, kind in cdsformat.fixups(data, e)
                       if kind == 'intern'}
            t, = [t for t in targets if self.ascii_text(data, t) == 'Square']
            # not a start-up string (their checksum is the archive's)
            self.assertGreaterEqual(t, h['str_offset'] + h['seed_size'])
            self.assertNotEqual(self.u64(data, t + STR_UTF8), 0)
            struct.pack_into('<I', data, t + STR_STATE,
                             self.u32(data, t + STR_STATE) & ~STATE_ASCII)
        r = self.check_refused(mutate)
        self.assertIn('cds: module cdsapp.shapes: bad shared string', r.stderr)

    def test_module_string_utf8_cache(self):
        # the non-ASCII strings of a module with a UTF-8 cache: encoding
        # one follows its utf8 pointer
        def mutate(data, h, e):
            strings = [t for c in self.code_objects(data, h, e)
                       for t in self.items(data, h,
                                           self.ptr(data, h, c + CO_CONSTS))
                       # the warm region holds strings only
                       if e['warm_start'] <= t < e['warm_end']]
            wide = [t for t in strings
                    if not self.u32(data, t + STR_STATE) & STATE_ASCII]
            self.assertEqual(len(wide), 3)      # LATIN1, UCS2, UCS4
            for t in wide:
                self.assertEqual(self.u64(data, t + STR_UTF8_LENGTH), 0)
                self.assertEqual(self.u64(data, t + STR_UTF8), 0)
                struct.pack_into('<QQ', data, t + STR_UTF8_LENGTH, 8, 16)
        self.check_refused(mutate, name='cdsapp.consts', code='''
            from cdsapp import consts
            print([s.encode() for s in (consts.LATIN1, consts.UCS2,
                                        consts.UCS4)])
        ''')

    def test_slot_fixed_up_twice(self):
        # an intern fixup copied over the next one of the same string
        # (whose slot so stays the checked archived string): the first
        # copy redirects its slot to the string main.py interned (it names
        # these attributes before it imports the package), the second took
        # that string for an archived one
        with open(self.main) as f:
            names = set(compile(f.read(), self.main, 'exec').co_names)

        def mutate(data, h, e):
            fs = h['fixup_offset'] + cdsformat.FIXUP.size * e['fixup_start']
            fixups = cdsformat.fixups(data, e)
            targets = [self.ptr(data, h, off) for off, kind in fixups]
            doubled = 0
            for k in range(1, len(fixups)):
                if (fixups[k - 1][1] == fixups[k][1] == 'intern'
                        and targets[k - 1] == targets[k]
                        and (k < 2 or targets[k - 2] != targets[k])
                        and self.ascii_text(data, targets[k]) in names):
                    at = fs + cdsformat.FIXUP.size * k
                    data[at:at + cdsformat.FIXUP.size] = \
                        data[at - cdsformat.FIXUP.size:at]
                    doubled += 1
            self.assertGreater(doubled, 0)
        for name in ('cdsapp', 'cdsapp.consts', 'cdsapp.shapes'):
            with self.subTest(name=name):
                r = self.check_refused(mutate, name=name)
                self.assertIn(f'cds: module {name}: a slot fixed up twice',
                              r.stderr)

    def test_every_other_intern_fixup_doubled(self):
        # as the fuzzer did it: the slots whose fixups were overwritten
        # keep strings that nothing checked
        def mutate(data, h, e):
            fs = h['fixup_offset'] + cdsformat.FIXUP.size * e['fixup_start']
            interns = [k for k, (off, kind)
                       in enumerate(cdsformat.fixups(data, e))
                       if kind == 'intern']
            self.assertGreater(len(interns), 2)
            for k in interns[:-1:2]:
                at = fs + cdsformat.FIXUP.size * k
                data[at + cdsformat.FIXUP.size:
                     at + 2 * cdsformat.FIXUP.size] = \
                    data[at:at + cdsformat.FIXUP.size]
        self.check_refused(mutate, name='cdsapp')

    def test_refcount_not_immortal(self):
        # 0: the copy of the module's code object that the reader serves
        # frees its constants when it goes; a count that Py_INCREF changes
        # (not 0xffffffff, though the interpreter takes it for immortal):
        # written, in the read-only part under -X cds_protect
        def forged(value):
            def mutate(data, h, e):
                cold = 0
                for c in self.code_objects(data, h, e):
                    t = self.ptr(data, h, c + CO_CONSTS)
                    if cdsformat.in_module(e, t):
                        self.assertEqual(self.u64(data, t + OB_REFCNT),
                                         IMMORTAL)
                        struct.pack_into('<Q', data, t + OB_REFCNT, value)
                        cold += e['cold_start'] <= t < e['cold_end']
                self.assertGreater(cold, 0)
            return mutate
        for value, options in ((0, ()), (0x80000000, ('-X', 'cds_protect'))):
            with self.subTest(value=hex(value)):
                self.check_refused(forged(value), name='cdsapp.consts',
                                   options=options)

    def test_consts_longer_than_their_tuple(self):
        # one item more, still inside the module's range: the next
        # object's header taken for an item
        def mutate(data, h, e):
            for c in self.code_objects(data, h, e):
                t = self.ptr(data, h, c + CO_CONSTS)
                if cdsformat.in_module(e, t):
                    struct.pack_into('<Q', data, t + OB_SIZE,
                                     self.u64(data, t + OB_SIZE) + 1)
        for relocate in (False, True):
            with self.subTest(relocate=relocate):
                self.check_refused(mutate, name='cdsapp.consts',
                                   relocate=relocate)

    def test_locals_grown_consistently(self):
        # counts, frame size and the local names and kinds all 8 more:
        # every size agrees, the names and kinds read are other objects
        def mutate(data, h, e):
            codes = []
            for c in self.code_objects(data, h, e):
                names = self.ptr(data, h, c + CO_LOCALSPLUSNAMES)
                kinds = self.ptr(data, h, c + CO_LOCALSPLUSKINDS)
                if (cdsformat.in_module(e, names)
                        and cdsformat.in_module(e, kinds)):
                    codes.append(c)
            self.assertGreater(len(codes), 2)
            for c in codes:
                for off in (CO_NLOCALSPLUS, CO_FRAMESIZE):
                    struct.pack_into('<i', data, c + off,
                                     self.i32(data, c + off) + 8)
            # each tuple and bytes once (code objects share them)
            for t in {self.ptr(data, h, c + off) for c in codes
                      for off in (CO_LOCALSPLUSNAMES, CO_LOCALSPLUSKINDS)}:
                struct.pack_into('<Q', data, t + OB_SIZE,
                                 self.u64(data, t + OB_SIZE) + 8)
        self.check_refused(mutate)

    def test_code_size_zero(self):
        # no code units: the interpreter runs what follows the object
        def mutate(data, h, e):
            struct.pack_into('<Q', data, e['code'] + OB_SIZE, 0)
        self.check_refused(mutate)

    def test_static_pointer_inside_an_object(self):
        # the small ints of shapes.fail() (depth == 2, depth + 1) 8 or 16
        # bytes on: inside the runtime's static objects, not at one's start
        with open(os.path.join(self.tmp, 'cdsapp', 'shapes.py')) as f:
            module = compile(f.read(), 'shapes.py', 'exec')
        fail, = [c for c in module.co_consts
                 if getattr(c, 'co_name', None) == 'fail']
        ints = {k: v for k, v in enumerate(fail.co_consts)
                if type(v) is int}
        self.assertEqual(sorted(ints.values()), [1, 2])

        def forged(delta):
            def mutate(data, h, e):
                code, = [c for c in self.code_objects(data, h, e)
                         if self.ascii_text(data, self.ptr(
                             data, h, c + CO_QUALNAME)) == 'fail']
                consts = self.ptr(data, h, code + CO_CONSTS)
                self.assertEqual(self.u64(data, consts + OB_SIZE),
                                 len(fail.co_consts))
                slots = {v: consts + TUPLE_ITEMS + 8 * k
                         for k, v in ints.items()}
                # static objects (outside the archive), one small int apart
                self.assertLess(self.ptr(data, h, slots[1]), 0)
                self.assertEqual(self.u64(data, slots[2])
                                 - self.u64(data, slots[1]), SMALL_INT_SIZE)
                for slot in slots.values():
                    struct.pack_into('<Q', data, slot,
                                     self.u64(data, slot) + delta)
            return mutate
        for delta in (8, 16):
            for options in ((), ('-X', 'cds_verify')):
                with self.subTest(delta=delta, options=options):
                    self.check_refused(forged(delta), options=options)


class PlantedFileTests(AppTestCase):
    """Nothing is read from the working directory unless named: an
    archive planted there (a shared /tmp) is not mapped."""

    ARCHIVE_PER_CLASS = True

    def test_archive_in_working_directory_not_mapped(self):
        planted = os.path.join(self.scratch, 'pycds.cds')
        shutil.copyfile(self.archive, planted)
        code = self.app_code('import cdsapp.shapes') + '\n' + INFO
        for args, env in [(('-X', 'cds=share'), None),
                          (('-X', 'cds'), None),
                          ((), clean_env(PYTHONCDS='share')),
                          ((), clean_env(PYCDSMODE='SHARE'))]:
            with self.subTest(args=args, env=env and 'PYTHONCDS'):
                r = run_python(*args, '-c', code, env=env, cwd=self.scratch)
                self.assertEqual(r.returncode, 0, r.stderr)
                info = json.loads(r.stdout.splitlines()[-1])
                self.assertFalse(info['active'])
                self.assertIsNone(info['archive'])
                self.assertEqual((info['modules'], info['served']), (0, 0))
        # the file itself is usable: named (relative to the working
        # directory), it is mapped
        r = run_python('-X', 'cds=share', '-X', 'cds_archive=pycds.cds',
                       '-c', code, cwd=self.scratch)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout.splitlines()[-1])
        self.assertTrue(info['active'])
        self.assertEqual(info['archive'], planted)
        self.assertGreater(info['served'], 0)


class TempAndLockFileTests(AppTestCase):

    def plant_temp_links(self, path, victim):
        """Symbolic links at the temporary names a writer of 'path' used to
        take (PATH.tmp.<pid>) for the next pids, all to 'victim'."""
        try:
            with open('/proc/sys/kernel/ns_last_pid') as f:
                first = int(f.read()) + 1
        except (OSError, ValueError):
            first = os.getpid()
        for pid in range(first, first + 3000):
            try:
                os.symlink(victim, f'{path}.tmp.{pid}')
            except FileExistsError:
                pass

    def test_trace_temp_file_links_not_followed(self):
        victim = os.path.join(self.scratch, 'victim')
        with open(victim, 'w') as f:
            f.write('precious\n')
        self.plant_temp_links(self.lst, victim)
        self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        with open(victim) as f:
            self.assertEqual(f.read(), 'precious\n')
        self.assertIn('cdsapp', [e[0] for e in read_list(self.lst)])
        self.assertFalse(os.path.islink(self.lst))

    def test_dump_temp_file_links_not_followed(self):
        victim = os.path.join(self.scratch, 'victim')
        with open(victim, 'w') as f:
            f.write('precious\n')
        self.python(*trace_args(self.lst), self.main)
        self.plant_temp_links(self.archive, victim)
        self.dump()
        with open(victim) as f:
            self.assertEqual(f.read(), 'precious\n')
        r, info = self.share_info()
        self.assertTrue(info['active'], r.stderr)

    def test_lock_file_symlink_not_followed(self):
        victim = os.path.join(self.scratch, 'nologin')
        os.symlink(victim, self.lst + '.lock')
        r = self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        self.assertFalse(os.path.exists(victim))
        self.assertIn('lock file', r.stderr)
        self.assertIn('symbolic link', r.stderr)

    def test_lock_file_private(self):
        self.python(*trace_args(self.lst), self.main)
        st = os.stat(self.lst + '.lock')
        self.assertEqual(st.st_mode & 0o077, 0, oct(st.st_mode))

    def test_loose_lock_file_made_private(self):
        with open(self.lst + '.lock', 'w'):
            pass
        os.chmod(self.lst + '.lock', 0o666)
        self.python(*trace_args(self.lst), self.main)
        self.assertEqual(os.stat(self.lst + '.lock').st_mode & 0o077, 0)
        self.assertIn('cdsapp', [e[0] for e in read_list(self.lst)])

    def test_held_lock_bounded_wait(self):
        fd = os.open(self.lst + '.lock', os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        t0 = time.monotonic()
        r = self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, TIMEOUT / 2)
        self.assertIn('another process holds its lock', r.stderr)
        self.assertFalse(os.path.exists(self.lst))


class DeadWriterTempFileTests(AppTestCase):
    """A writer killed before its rename (where O_TMPFILE is not there)
    leaves PATH.tmp.<pid>.<8 hex digits>; the next successful write of PATH
    removes those of dead writers: regular files of this user, whose pid
    is not running, untouched for over a minute.  Nothing else."""

    @staticmethod
    def dead_pid():
        p = subprocess.Popen([sys.executable, '-c', 'pass'])
        p.wait()
        try:
            os.kill(p.pid, 0)
        except ProcessLookupError:
            return p.pid
        raise unittest.SkipTest(f'pid {p.pid} reused at once')

    def plant(self, path):
        """Leftovers beside 'path': return (those to remove, those to
        keep)."""
        dead = self.dead_pid()
        old = time.time() - 120
        victim = os.path.join(self.scratch, 'victim')
        with open(victim, 'w') as f:
            f.write('precious\n')
        os.utime(victim, (old, old))

        def file(name, mtime=old):
            with open(name, 'w') as f:
                f.write('leftover\n')
            os.utime(name, (mtime, mtime))
            return name

        def link(name):
            os.symlink(victim, name)
            os.utime(name, (old, old), follow_symlinks=False)
            return name

        def directory(name):
            os.mkdir(name)
            os.utime(name, (old, old))
            return name

        other = os.path.join(os.path.dirname(path), 'other.cds')
        removed = [file(f'{path}.tmp.{dead}.0123abcd'),
                   file(f'{path}.tmp.{dead}.ffffffff')]
        kept = [
            # a live writer (this process), however old its file
            file(f'{path}.tmp.{os.getpid()}.89abcdef'),
            # a dead writer's, but recent
            file(f'{path}.tmp.{dead}.00000001', mtime=time.time()),
            # not regular files
            link(f'{path}.tmp.{dead}.00000002'),
            directory(f'{path}.tmp.{dead}.00000003'),
            # other names
            file(f'{path}.tmp.{dead}.0000004'),
            file(f'{path}.tmp.{dead}.0000000g'),
            file(f'{path}.tmp.{dead}.00000005x'),
            file(f'{path}.tmp.x{dead}.00000006'),
            file(f'{path}.tmp.{dead}'),
            file(f'{other}.tmp.{dead}.00000007'),
            victim,
        ]
        if os.geteuid() == 0:
            import pwd
            try:
                nobody = pwd.getpwnam('nobody')
            except KeyError:
                pass
            else:
                # another user's
                name = file(f'{path}.tmp.{dead}.00000008')
                os.chown(name, nobody.pw_uid, nobody.pw_gid)
                os.utime(name, (old, old))
                kept.append(name)
        return removed, kept

    def check(self, removed, kept):
        self.assertEqual([p for p in removed if os.path.lexists(p)], [])
        self.assertEqual([p for p in kept if not os.path.lexists(p)], [])
        with open(os.path.join(self.scratch, 'victim')) as f:
            self.assertEqual(f.read(), 'precious\n')

    def test_dump_removes_dead_writers_files(self):
        self.python(*trace_args(self.lst), self.main)
        removed, kept = self.plant(self.archive)
        # a dump that writes no archive (its list is missing) leaves them
        r = self.dump(lst=os.path.join(self.scratch, 'missing.lst'),
                      check=False)
        self.assertEqual(r.returncode, 1)
        self.check([], removed + kept)
        # one that writes it removes the dead writers' files
        self.dump()
        self.check(removed, kept)
        r, info = self.share_info()
        self.assertTrue(info['active'], r.stderr)

    def test_trace_removes_dead_writers_files(self):
        removed, kept = self.plant(self.lst)
        self.python(*trace_args(self.lst), self.main)
        self.check(removed, kept)
        self.assertIn('cdsapp', [e[0] for e in read_list(self.lst)])


class SpecialFileTests(AppTestCase):

    def fifo(self, name):
        path = os.path.join(self.scratch, name)
        os.mkfifo(path)
        return path

    def test_fifo_archive(self):
        fifo = self.fifo('a.cds')
        r, info = self.share_info('-X', 'cds_verbose', archive=fifo,
                                  timeout=TIMEOUT)
        self.assertFalse(info['active'])
        self.assertEqual(info['reason'], 'not a regular file')

    def test_fifo_list_trace(self):
        fifo = self.fifo('a.lst')
        r = self.python(*trace_args(fifo), self.main, timeout=TIMEOUT)
        self.assertIn('not a regular file', r.stderr)

    def test_fifo_list_dump(self):
        fifo = self.fifo('a.lst')
        r = self.dump(lst=fifo, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('not a regular file', r.stderr)

    def test_dev_zero_list(self):
        r = self.dump(lst='/dev/zero', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('not a regular file', r.stderr)
        r = self.python(*trace_args('/dev/zero'), '-c', 'pass',
                        timeout=TIMEOUT)
        self.assertIn('not a regular file', r.stderr)

    def test_long_line_list(self):
        lst = os.path.join(self.scratch, 'long.lst')
        with open(lst, 'wb') as f:
            f.write(b'x' * (1 << 20))
        r = self.dump(lst=lst, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('longer than', r.stderr)

    def test_special_and_foreign_list_entries_skipped(self):
        # entries whose paths fit their names but are a FIFO and a link to
        # /dev/zero (reading either would block or never end), and two
        # whose paths are not source files of the module at all
        fifo = self.fifo('mod.py')
        zero = os.path.join(self.scratch, 'zero.py')
        os.symlink('/dev/zero', zero)
        entries = [('zero', 'source', zero),
                   ('mod', 'source', fifo),
                   ('passwd', 'source', '/etc/passwd'),
                   ('nosuchmod', 'source', os.path.join(self.tmp, 'main.py'))]
        lst = os.path.join(self.scratch, 'special.lst')
        write_list(lst, entries)
        r = self.python('-X', 'cds_verbose', *dump_args(lst, self.archive),
                        timeout=TIMEOUT)
        self.assertIn('0 modules archived, 4 skipped', r.stderr)
        self.assertIn('zero: the source is not a regular file', r.stderr)
        self.assertIn('mod: the source is not a regular file', r.stderr)
        self.assertIn('passwd: the listed path is not a source file',
                      r.stderr)


class SmallerItemTests(AppTestCase):

    def test_relocate_zero_means_no(self):
        self.trace_and_dump()
        _, on = self.share_info('-X', 'cds_relocate=1', '-X', 'cds_in_place',
                                code='import json')
        _, off = self.share_info('-X', 'cds_relocate=0', '-X', 'cds_in_place',
                                 code='import json')
        self.assertFalse(on['mapped_at_preferred_address'])
        self.assertTrue(off['mapped_at_preferred_address'])
        r = self.python('-X', 'cds_relocate=maybe', '-c', 'pass', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('-X cds_relocate', r.stderr)

    def test_info_non_utf8_archive_path(self):
        name = os.fsdecode(b'arch\xff.cds')
        r = self.python('-c', INFO, env=clean_env(
            PYTHONCDS='share',
            PYTHONCDSARCHIVE=os.path.join(self.scratch, name)))
        info = json.loads(r.stdout)
        self.assertTrue(info['archive'].endswith(name))

    def test_invalid_utf8_list_name(self):
        lst = os.path.join(self.scratch, 'bad.lst')
        with open(lst, 'wb') as f:
            f.write(LIST_HEADER.encode() + b'\n')
            f.write(b'mod\xff\tsource\t/tmp/mod.py\n')
        r = self.dump(lst=lst, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('line 2: not a module list entry', r.stderr)
        self.assertNotIn('Traceback', r.stderr)

    def test_long_list_merge(self):
        # a trace merged into a 100,000-entry list: linear, not quadratic
        # (the old merge took about two minutes)
        entries = [(f'm{i}', 'source', f'/nonexistent/m{i}.py')
                   for i in range(100_000)]
        write_list(self.lst, entries)
        t0 = time.monotonic()
        self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        self.assertLess(time.monotonic() - t0, TIMEOUT / 2)
        merged = read_list(self.lst)
        self.assertEqual(merged[:100_000], entries)
        self.assertIn('cdsapp', [e[0] for e in merged[100_000:]])


if __name__ == '__main__':
    unittest.main()
