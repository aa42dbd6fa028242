"""-X cds_protect: the archive's never-written parts are mapped read-only.

A process in protect mode must behave exactly as one without it; a write to
the read-only part must stop the process with a diagnostic naming the
archive, the file offset and the module.
"""

import json
import signal
import textwrap
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import INFO, AppTestCase, clean_env

# Operations that write to objects in stock CPython and that programs do
# with archived constants: hashing (cached in str and bytes objects),
# interning, setattr/getattr with constant names, code.replace() (which
# re-interns co_names), marshal, pickling, dict keys of every constant type.
EXERCISE = textwrap.dedent('''
    import sys, marshal, pickle, copy, dis, io, inspect
    sys.path.insert(0, %(root)r)
    import cdsapp
    from cdsapp import consts, shapes
    out = []
    code = consts.member.__code__
    for c in code.co_consts + consts.SMALL + consts.FLOATS + (consts.DATA,
                                                                consts.BIG):
        # (a frozenset's order depends on the hash seed)
        text = repr(sorted(c, key=repr)) if type(c) is frozenset else repr(c)
        out.append((text, hash(c) == hash(copy.deepcopy(c))))
    out.append(hash(code.co_linetable) == hash(bytes(code.co_linetable)))
    out.append(hash(code.co_exceptiontable) ==
               hash(bytes(code.co_exceptiontable)))
    keys = {consts.LATIN1: 1, consts.UCS2: 2, consts.DATA: 3, consts.BIG: 4,
            consts.NESTED: 5, cdsapp.__doc__: 6}
    out.append(sorted(map(repr, keys)))
    out.append(sys.intern(cdsapp.__doc__) == cdsapp.__doc__)
    class C: pass
    o = C()
    setattr(o, cdsapp.__doc__, 1)
    out.append(getattr(o, cdsapp.__doc__))
    for fn in (consts.member, consts.keyword, shapes.make_adder,
               shapes.Point.norm):
        co = fn.__code__
        out.append(co.replace(co_linetable=b"") != co)
        out.append(marshal.loads(marshal.dumps(co)) == co)
        plain = tuple(c for c in co.co_consts if not inspect.iscode(c))
        out.append(pickle.loads(pickle.dumps(plain)) == plain)
        out.append(len(list(co.co_positions())))
        f = io.StringIO(); dis.dis(co, file=f); out.append(len(f.getvalue()))
    out.append(len(inspect.getsource(shapes)))
    for i in range(3000):
        shapes.Point(i, i).norm(); consts.member(i); consts.keyword("if")
    try:
        shapes.fail()
    except ValueError as e:
        out.append(str(e))
    import gc; gc.collect()
    print(repr(out))
''')

# Write one byte into the line table of an archived code object: a bytes
# object in the archive's cold (read-only) region.
WRITE = textwrap.dedent('''
    import ctypes, sys, _cds
    sys.path.insert(0, %(root)r)
    from cdsapp import shapes
    table = shapes.make_adder.__code__.co_linetable
    assert _cds.is_archived(table)
    ctypes.memset(id(table) + sys.getsizeof(b"") - 1, 0x20, 1)
    print("written")
''')


class ProtectTests(AppTestCase):
    # the writes of these tests land in the processes' mappings, never in
    # the archive file
    ARCHIVE_PER_CLASS = True

    def test_info_reports_protection(self):
        r, info = self.share_info('-X', 'cds_protect')
        self.assertTrue(info['protected'])
        r, info = self.share_info(env=clean_env(PYTHONCDSPROTECT='1'))
        self.assertTrue(info['protected'])
        r, info = self.share_info()
        self.assertFalse(info['protected'])

    def test_same_behaviour_under_protection(self):
        code = EXERCISE % {'root': self.tmp}
        expected = self.python('-c', code).stdout
        for extra in ((), ('-X', 'cds_relocate')):
            with self.subTest(extra=extra):
                r = self.share('-X', 'cds_protect', *extra, '-c', code)
                self.assertEqual(r.stdout, expected)
                self.assertEqual(r.stderr, '')
        r = self.share('-X', 'cds_protect', self.main)
        self.assertEqual(r.stdout, self.expected)

    def test_write_faults_with_diagnostic(self):
        code = WRITE % {'root': self.tmp}
        # without protection the write lands in a private copy of the page
        r = self.share('-c', code)
        self.assertEqual(r.stdout.strip(), 'written')
        for extra in ((), ('-X', 'faulthandler'), ('-X', 'cds_relocate')):
            with self.subTest(extra=extra):
                r = self.share('-X', 'cds_protect', '-X', 'cds_in_place', *extra, '-c', code,
                               check=False)
                self.assertEqual(r.returncode, -signal.SIGSEGV, r.stderr)
                self.assertNotIn('written', r.stdout)
                self.assertRegex(
                    r.stderr,
                    r"Fatal Python error: cds: write to the read-only part of "
                    r"archive '%s' at file offset 0x[0-9a-f]+ \(cold region, "
                    r"an object of module cdsapp\.shapes\)"
                    % self.archive.replace('.', r'\.'))
                offset = int(r.stderr.split('file offset ')[1].split()[0], 16)
                with open(self.archive, 'rb') as f:
                    header = cdsformat.read_header(f.read(4096))
                self.assertGreaterEqual(offset, header['cold_offset'])
                self.assertLess(offset,
                                header['cold_offset'] + header['cold_size'])
                # within the range of cdsapp.shapes
                with open(self.archive, 'rb') as f:
                    entries = cdsformat.read_index(f.read())
                shapes = [e for e in entries if e['name'] == 'cdsapp.shapes'][0]
                self.assertTrue(shapes['cold_start'] <= offset < shapes['cold_end'])

    def test_other_crashes_are_not_reported_as_archive_writes(self):
        code = 'import ctypes; ctypes.string_at(0)'
        r = self.share('-X', 'cds_protect', '-c', code, check=False)
        self.assertEqual(r.returncode, -signal.SIGSEGV)
        self.assertNotIn('cds:', r.stderr)

    def test_kill_with_sigsegv_still_kills(self):
        code = 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV); print("alive")'
        r = self.share('-X', 'cds_protect', '-c', code, check=False)
        self.assertEqual(r.returncode, -signal.SIGSEGV)
        self.assertNotIn('alive', r.stdout)

    def test_bad_value(self):
        r = self.share('-X', 'cds_protect=yes', '-c', 'pass', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('bad value for option -X cds_protect', r.stderr)
        r = self.share('-X', 'cds_protect=0', '-c', INFO)
        self.assertFalse(json.loads(r.stdout)['protected'])


if __name__ == '__main__':
    unittest.main()
