"""The archive file, read independently, and a round trip of the stdlib."""

import json
import os
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import (dump_args, make_archive, read_list,
                                run_checked, run_python, share_args, temp_dir,
                                write_stdlib_list)


class ArchiveFileTests(unittest.TestCase):

    def setUp(self):
        self.tmp = temp_dir(self.addCleanup)
        self.lst = os.path.join(self.tmp, 'a.lst')
        self.archive = os.path.join(self.tmp, 'a.cds')

    def test_independent_reader(self):
        make_archive(self.lst, self.archive,
                     ['-X', 'frozen_modules=on',    # (traced with it)
                      '-c', 'import json, email.message, decimal'],
                     cwd=self.tmp)
        with open(self.archive, 'rb') as f:
            data = f.read()
        self.assertEqual(cdsformat.validate(data), [])
        h = cdsformat.read_header(data)
        self.assertEqual(h['magic'], cdsformat.MAGIC)
        self.assertEqual(h['format_version'], cdsformat.FORMAT_VERSION)
        self.assertEqual(h['file_size'] % cdsformat.PAGE, 0)
        end = h['fixup_offset'] + cdsformat.FIXUP.size * h['fixup_count']
        for region in cdsformat.REGIONS:
            # in order, page-aligned, every region used
            self.assertEqual(h[f'{region}_offset'] % cdsformat.PAGE, 0)
            self.assertGreaterEqual(h[f'{region}_offset'], end)
            self.assertGreater(h[f'{region}_size'], 0, region)
            end = h[f'{region}_offset'] + h[f'{region}_size']
        self.assertLessEqual(end, h['file_size'])
        entries = cdsformat.read_index(data)
        order = ('source', 'frozen', 'regex', 'string')
        keys = [(order.index(e['kind']), e['name'], e['path'] or b'')
                for e in entries]
        self.assertEqual(keys, sorted(keys))
        listed = {(n, k) for n, k, p in read_list(self.lst)}
        derived = ('regex', 'string')
        modules = {(e['name'], e['kind']) for e in entries
                   if e['kind'] not in derived}
        self.assertEqual(modules,
                         {(n, k) for n, k in listed if k not in derived})
        # an entry for each pattern and string traced (those that warn,
        # none here)
        self.assertEqual(len(entries) - len(modules),
                         sum(k in derived for n, k, p in read_list(self.lst)))
        with_functions = set()
        for e in entries:
            if e['kind'] == 'source':
                st = os.stat(e['path'])
                self.assertEqual((e['size'], e['mtime_ns']),
                                 (st.st_size, st.st_mtime_ns))
                # the hash a hash-based .pyc of the source would hold
                with open(e['path'], 'rb') as f:
                    self.assertEqual(e['source_hash'],
                                     cdsformat.source_hash(f.read()),
                                     e['name'])
            elif e['kind'] == 'string':
                # its text as its path
                self.assertTrue(e['path'])
                self.assertEqual(e['source_hash'], 0)
            else:
                self.assertIsNone(e['path'])
                # a program holds the digest of re's sources (nonzero)
                self.assertEqual(e['source_hash'] == 0, e['kind'] == 'frozen')
            # the bitmap marks pointer slots of the module only, every one
            # holding an address in the archive or in the image
            relocs = cdsformat.relocations(data, e)
            self.assertTrue(relocs, e['name'])
            self.assertEqual(cdsformat.encode_relocations(e, relocs),
                             cdsformat.reloc_words(data, e))
            for slot in relocs:
                self.assertTrue(cdsformat.in_module(e, slot & ~1, 8))
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
        nsources = write_stdlib_list(self.lst)
        r = run_checked(*dump_args(self.lst, self.archive), cwd=self.tmp)
        self.assertIn('modules archived', r.stderr)
        r = run_python(*share_args(self.archive),
                       '-m', 'test.test_cds.roundtrip', self.lst, cwd=self.tmp,
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
