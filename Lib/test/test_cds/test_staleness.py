"""When an archived module is current: as stock judges a .pyc.

An archive entry records its source's size, mtime (ns) and hash.  The stamps
must match; where stock would read the source (no usable timestamp .pyc: -B,
PYTHONDONTWRITEBYTECODE, a hash-based .pyc, stale stamps, a pycache_prefix),
share mode reads it too and compares the hash, so that an edit that keeps
the size and mtime never runs the old code where stock runs the new one
(issue item 6).  -X cds_check_source compares it for every entry.
"""

import os
import py_compile
import importlib.util
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import (
    AppTestCase, clean_env, read_list, trace_args, write_files, write_list)

# A package of its own beside the application: nothing but these two
# modules in the archive, so that the counters are theirs only.
FILES = {
    'stalepkg/__init__.py': '''
        """stalepkg"""
    ''',
    'stalepkg/mod.py': '''
        VALUE = "old"
    ''',
}
PROBE = 'import stalepkg.mod; print(stalepkg.mod.VALUE)'
NAMES = ('stalepkg', 'stalepkg.mod')


class SourceHashTests(AppTestCase):

    def setUp(self):
        super().setUp()
        write_files(self.tmp, FILES)
        self.pkg = os.path.join(self.tmp, 'stalepkg')
        self.mod = os.path.join(self.pkg, 'mod.py')
        self.cache = os.path.join(self.pkg, '__pycache__')
        # trace without writing .pyc files, keep only our package's
        # entries, dump (no .pyc files either)
        self.python('-B', *trace_args(self.lst), '-c', self.probe())
        entries = [e for e in read_list(self.lst) if e[0] in NAMES]
        self.assertEqual(sorted(e[0] for e in entries), list(NAMES))
        write_list(self.lst, entries)
        self.dump()
        self.assertFalse(os.path.exists(self.cache))

    def dump_with_pycs(self):
        """The usual set-up: a normal run wrote the timestamp .pyc files,
        then the archive was dumped."""
        self.assertEqual(self.off(env=self.env(write_bytecode=True)), 'old')
        self.assertTrue(os.path.isfile(self.pyc_path()))
        self.dump()

    def probe(self):
        return self.app_code(PROBE)

    def pyc_path(self, path=None):
        return importlib.util.cache_from_source(path or self.mod)

    def compile_pyc(self, mode, paths=None):
        """Write the .pyc stock reads for both modules (or 'paths'), of
        'mode' (a py_compile.PycInvalidationMode), from the sources as they
        are."""
        for path in paths or (os.path.join(self.pkg, '__init__.py'), self.mod):
            py_compile.compile(path, cfile=self.pyc_path(path), doraise=True,
                               invalidation_mode=mode)
        self.assertTrue(os.path.isfile(self.pyc_path()))

    def edit_keeping_stamps(self):
        """A same-size edit of stalepkg/mod.py with its mtime (ns) put
        back: only its hash tells it from the archived source."""
        st = os.stat(self.mod)
        with open(self.mod, 'rb') as f:
            old = f.read()
        new = old.replace(b'"old"', b'"new"')
        self.assertNotEqual(new, old)
        with open(self.mod, 'r+b') as f:      # in place, as an editor may
            f.write(new)
        os.utime(self.mod, ns=(st.st_atime_ns, st.st_mtime_ns))
        st2 = os.stat(self.mod)
        self.assertEqual((st2.st_size, st2.st_mtime_ns),
                         (st.st_size, st.st_mtime_ns))

    def env(self, write_bytecode=False, **changes):
        if write_bytecode:
            changes['PYTHONDONTWRITEBYTECODE'] = None
        return clean_env(**changes)

    def off(self, *args, env=None):
        """VALUE as stock imports it."""
        r = self.python(*args, '-c', self.probe(), env=env or self.env())
        return r.stdout.strip()

    def shared(self, *args, env=None):
        """VALUE in share mode, _cds.info() and stderr (-X cds_verbose)."""
        r, info = self.share_info('-X', 'cds_verbose', *args,
                                  code=self.probe(), env=env or self.env())
        self.assertTrue(info['active'], r.stderr)
        return r.stdout.splitlines()[0], info, r.stderr

    @staticmethod
    def stats(path):
        """The served and hashed counters of the PYTHONCDSSTATS line."""
        with open(path) as f:
            fields = dict(kv.split('=') for kv in f.read().split())
        return {k: fields.get(k) for k in ('served', 'hashed')}

    def check_stale_by_hash(self, value, info, stderr):
        self.assertEqual(value, 'new')
        self.assertEqual(info['stale'], 1)
        self.assertEqual(info['served'], 1)         # stalepkg itself
        self.assertGreaterEqual(info['hashed'], 1)
        self.assertIn(f'stale: stalepkg.mod ({self.mod}: source hash '
                      'differs from the dump)', stderr)

    # -- the archive records the hash ------------------------------------

    def entries(self):
        with open(self.archive, 'rb') as f:
            data = f.read()
        self.assertEqual(cdsformat.validate(data), [])
        return {e['name']: e for e in cdsformat.read_index(data)}

    def test_entries_record_the_source_hash_and_pyc(self):
        sources = [('stalepkg', os.path.join(self.pkg, '__init__.py')),
                   ('stalepkg.mod', self.mod)]
        # dumped without .pyc files
        entries = self.entries()
        for name, path in sources:
            with open(path, 'rb') as f:
                expected = cdsformat.source_hash(f.read())
            self.assertEqual(entries[name]['source_hash'], expected, name)
            self.assertEqual((entries[name]['pyc_mtime_ns'],
                              entries[name]['pyc_size']), (0, 0), name)
        # with them: the stamps of the .pyc the dump saw
        self.dump_with_pycs()
        entries = self.entries()
        for name, path in sources:
            st = os.stat(self.pyc_path(path))
            self.assertEqual((entries[name]['pyc_mtime_ns'],
                              entries[name]['pyc_size']),
                             (st.st_mtime_ns, st.st_size), name)

    # -- stock reads the source: so does share mode ----------------------

    def test_no_pyc_dont_write_bytecode(self):
        # (a) -B, PYTHONDONTWRITEBYTECODE: no .pyc, stock compiles the
        # source; the old code must not run
        self.edit_keeping_stamps()
        for args, env in [(('-B',), self.env(write_bytecode=True)),
                          ((), self.env(PYTHONDONTWRITEBYTECODE='1'))]:
            with self.subTest(args=args):
                self.assertEqual(self.off(*args, env=env), 'new')
                self.check_stale_by_hash(*self.shared(*args, env=env))
                self.assertFalse(os.path.exists(self.cache))

    def test_checked_hash_pyc(self):
        # (b) a checked hash-based .pyc of the old source: stock compares
        # the hash and compiles the new source
        self.compile_pyc(py_compile.PycInvalidationMode.CHECKED_HASH)
        self.edit_keeping_stamps()
        self.check_stale_by_hash(*self.shared('-B'))
        self.assertEqual(self.off('-B'), 'new')

    def test_unchecked_hash_pyc(self):
        # an unchecked hash-based .pyc: stock runs it whatever the source
        # holds, here the new code (the .pyc rebuilt after the edit)
        self.edit_keeping_stamps()
        self.compile_pyc(py_compile.PycInvalidationMode.UNCHECKED_HASH)
        self.assertEqual(self.off('-B'), 'new')
        self.check_stale_by_hash(*self.shared('-B'))

    def test_timestamp_pyc_with_other_stamps(self):
        # a timestamp .pyc whose stamps are not the source's: stock
        # compiles the source
        self.compile_pyc(py_compile.PycInvalidationMode.TIMESTAMP)
        with open(self.pyc_path(self.mod), 'r+b') as f:
            f.seek(8)
            f.write(b'\0\0\0\0')        # another mtime
        self.edit_keeping_stamps()
        self.assertEqual(self.off('-B'), 'new')
        self.check_stale_by_hash(*self.shared('-B'))

    def test_pyc_rewritten_since_dump(self):
        # the .pyc the dump saw replaced by one of the edited source (as
        # compileall -f does), with the source's stamps: stock runs the
        # new code, so the hash decides
        self.dump_with_pycs()
        self.edit_keeping_stamps()
        self.compile_pyc(py_compile.PycInvalidationMode.TIMESTAMP,
                         paths=[self.mod])
        self.assertEqual(self.off('-B'), 'new')
        self.check_stale_by_hash(*self.shared('-B'))

    def test_pyc_written_after_dump_is_hashed(self):
        # a .pyc the dump did not see may hold any code: the unchanged
        # source is hashed, and served
        self.assertEqual(self.off(env=self.env(write_bytecode=True)), 'old')
        self.assertTrue(os.path.isfile(self.pyc_path()))
        value, info, stderr = self.shared('-B')
        self.assertEqual(value, 'old')
        self.assertEqual((info['served'], info['stale'], info['hashed']),
                         (2, 0, 2))

    def test_pycache_prefix(self):
        # with sys.pycache_prefix, stock does not read __pycache__ (whose
        # timestamp .pyc of the old source has the stamps of the edited one)
        self.compile_pyc(py_compile.PycInvalidationMode.TIMESTAMP)
        self.edit_keeping_stamps()
        prefix = ('-X', f'pycache_prefix={os.path.join(self.scratch, "pyc")}')
        self.assertEqual(self.off('-B', *prefix), 'new')
        self.check_stale_by_hash(*self.shared('-B', *prefix))

    def test_unchanged_without_pyc_is_served(self):
        # (e) the hash is checked and matches: served
        stats = os.path.join(self.scratch, 'stats')
        value, info, stderr = self.shared(
            '-B', env=self.env(PYTHONCDSSTATS=stats))
        self.assertEqual(value, 'old')
        self.assertEqual((info['served'], info['stale'], info['hashed']),
                         (2, 0, 2))
        self.assertEqual(self.stats(stats), {'served': '2', 'hashed': '2'})

    # -- stock trusts the stamps of a .pyc: share mode too ---------------

    def test_current_timestamp_pyc_not_hashed(self):
        # (c) the usual case: valid timestamp .pyc files, written by a
        # normal run; stock runs them without reading the sources, and
        # share mode serves the entries without hashing them
        self.dump_with_pycs()
        stats = os.path.join(self.scratch, 'stats')
        value, info, stderr = self.shared(
            '-B', env=self.env(PYTHONCDSSTATS=stats))
        self.assertEqual(value, 'old')
        self.assertEqual((info['served'], info['stale'], info['hashed']),
                         (2, 0, 0))
        self.assertEqual(self.stats(stats), {'served': '2', 'hashed': '0'})

    def test_check_source(self):
        # (d) normalized mtimes: the source edited and its .pyc rebuilt,
        # both with the stamps (and sizes) of those the dump saw: stock
        # runs the new .pyc; only -X cds_check_source, which hashes every
        # entry, tells the sources apart
        self.dump_with_pycs()
        pyc = self.pyc_path()
        pst = os.stat(pyc)
        self.edit_keeping_stamps()
        self.compile_pyc(py_compile.PycInvalidationMode.TIMESTAMP,
                         paths=[self.mod])
        os.utime(pyc, ns=(pst.st_atime_ns, pst.st_mtime_ns))
        self.assertEqual(os.stat(pyc).st_size, pst.st_size)
        self.assertEqual(self.off('-B'), 'new')
        value, info, stderr = self.shared('-B')
        self.assertEqual((info['served'], info['hashed']), (2, 0))
        for args, env in [(('-X', 'cds_check_source'), None),
                          (('-X', 'cds_check_source=1'), None),
                          ((), self.env(PYTHONCDSCHECKSOURCE='1'))]:
            with self.subTest(args=args, env=env and 'PYTHONCDSCHECKSOURCE'):
                value, info, stderr = self.shared('-B', *args, env=env)
                self.check_stale_by_hash(value, info, stderr)
                self.assertEqual(info['hashed'], 2)
        # =0 turns it off, also over the environment
        value, info, stderr = self.shared(
            '-B', '-X', 'cds_check_source=0',
            env=self.env(PYTHONCDSCHECKSOURCE='1'))
        self.assertEqual((info['served'], info['hashed']), (2, 0))

if __name__ == '__main__':
    unittest.main()
