"""The archive file, read independently, and a round trip of the stdlib."""

import _imp
import json
import os
import tempfile
import unittest

from test.support import os_helper
from test.test_cds import format as cdsformat
from test.test_cds.util import read_list, run_python

STDLIB = os.path.dirname(os.__file__)


def stdlib_module_list(path):
    """Write a module list of every module and package under Lib/ plus the
    frozen modules; return the number of source entries."""
    entries = []
    for root, dirs, files in os.walk(STDLIB):
        dirs[:] = sorted(d for d in dirs
                         if d.isidentifier() and d != 'site-packages')
        rel = os.path.relpath(root, STDLIB)
        parts = [] if rel == '.' else rel.split(os.sep)
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext != '.py' or not stem.isidentifier():
                continue
            name = '.'.join(parts + ([] if stem == '__init__' else [stem]))
            if name:
                entries.append((name, os.path.join(root, f)))
    with open(path, 'w', encoding='utf-8') as fp:
        fp.write('# pycds module list 1\n')
        for name in sorted(_imp._frozen_module_names()):
            fp.write(f'{name}\tfrozen\n')
        for name, p in entries:
            fp.write(f'{name}\tsource\t{p}\n')
    return len(entries)


class ArchiveFileTests(unittest.TestCase):

    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(os_helper.rmtree, self.tmp)

    def dump(self, lst, archive, *args):
        r = run_python('-X', 'cds=dump', '-X', f'cds_list={lst}',
                       '-X', f'cds_archive={archive}', *args, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_independent_reader(self):
        lst = os.path.join(self.tmp, 'a.lst')
        archive = os.path.join(self.tmp, 'a.cds')
        r = run_python('-X', 'cds=trace', '-X', f'cds_list={lst}',
                       '-X', 'frozen_modules=on',
                       '-c', 'import json, email.message, decimal', cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.dump(lst, archive)
        with open(archive, 'rb') as f:
            data = f.read()
        self.assertEqual(cdsformat.validate(data), [])
        h = cdsformat.read_header(data)
        self.assertEqual(h['magic'], cdsformat.MAGIC)
        self.assertEqual(h['file_size'] % cdsformat.PAGE, 0)
        end = h['fixup_offset'] + 16 * h['fixup_count']
        for region in cdsformat.REGIONS:
            # in order, page-aligned, every region used
            self.assertEqual(h[f'{region}_offset'] % cdsformat.PAGE, 0)
            self.assertGreaterEqual(h[f'{region}_offset'], end)
            self.assertGreater(h[f'{region}_size'], 0, region)
            end = h[f'{region}_offset'] + h[f'{region}_size']
        self.assertLessEqual(end, h['file_size'])
        entries = cdsformat.read_index(data)
        keys = [(e['kind'] == 'frozen', e['name'], e['path'] or b'')
                for e in entries]
        self.assertEqual(keys, sorted(keys))
        listed = {(n, k) for n, k, p in read_list(lst)}
        self.assertEqual({(e['name'], e['kind']) for e in entries}, listed)
        with_functions = set()
        for e in entries:
            if e['kind'] == 'source':
                st = os.stat(e['path'])
                self.assertEqual((e['size'], e['mtime_ns']),
                                 (st.st_size, st.st_mtime_ns))
            else:
                self.assertIsNone(e['path'])
            self.assertTrue(e['code_start'] <= e['code'] < e['code_end'])
            kinds = [k for off, k in cdsformat.fixups(data, e)]
            # interning first, then frozensets, then code objects
            order = {'intern': 0, 'frozenset': 1, 'code': 2}
            self.assertEqual(kinds, sorted(kinds, key=order.get))
            # the module's own code object and its class bodies are served
            # as copies and have no code fixup; its functions' code has
            code_fixups = {off for off, k in cdsformat.fixups(data, e)
                           if k == 'code'}
            self.assertNotIn(e['code'], code_fixups)
            if code_fixups:
                with_functions.add(e['name'])
        self.assertIn('json.decoder', with_functions)

    def test_whole_stdlib_round_trip(self):
        lst = os.path.join(self.tmp, 'stdlib.lst')
        archive = os.path.join(self.tmp, 'stdlib.cds')
        nsources = stdlib_module_list(lst)
        r = self.dump(lst, archive)
        self.assertIn('modules archived', r.stderr)
        r = run_python('-X', 'cds=share', '-X', f'cds_archive={archive}',
                       '-m', 'test.test_cds.roundtrip', lst, cwd=self.tmp,
                       timeout=900)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        result = json.loads(r.stdout.splitlines()[-1])
        mismatches = [l for l in r.stdout.splitlines() if l.startswith('MISMATCH')]
        self.assertEqual(mismatches, [])
        self.assertEqual(result['mismatches'], 0)
        # everything that compiles was archived and served (a handful of
        # test files are deliberately invalid)
        self.assertGreater(result['compared'], nsources - 20)


if __name__ == '__main__':
    unittest.main()
