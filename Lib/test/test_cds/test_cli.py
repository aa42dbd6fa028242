"""python -m cds: the archive tool (verify)."""

import json
import os
import struct
import unittest

from test.test_cds.test_untrusted import (
    CO_CONSTS, CO_LINETABLE, ForgedArchiveTests)
from test.test_cds.util import AppTestCase, run_python


def cds_tool(*args, **kwargs):
    return run_python('-m', 'cds', *args, **kwargs)


class VerifyTests(AppTestCase):

    ARCHIVE_PER_CLASS = True

    def verify(self, *args, archive=None):
        return cds_tool('verify', *args, archive or self.archive, cwd=self.tmp)

    def test_good_archive(self):
        for args in ((), ('--deep',), ('--check-source',)):
            with self.subTest(args=args):
                r = self.verify(*args)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertRegex(r.stdout,
                                 r'app.cds: (\d+) modules, \1 usable, '
                                 r'0 stale, 0 corrupt')

    def test_json(self):
        r = self.verify('--json')
        self.assertEqual(r.returncode, 0, r.stderr)
        result = json.loads(r.stdout)
        self.assertTrue(result['usable'])
        names = {m['name']: m for m in result['modules']}
        self.assertIn('cdsapp.shapes', names)
        self.assertEqual(names['cdsapp.shapes']['kind'], 'source')
        self.assertTrue(all(m['problem'] is None for m in result['modules']))

    def test_truncated(self):
        path = os.path.join(self.scratch, 'cut.cds')
        with open(path, 'wb') as f:
            f.write(self.good[:5000])
        r = self.verify(archive=path)
        self.assertEqual(r.returncode, 1)
        self.assertIn('not usable', r.stdout)
        self.assertNotIn('Traceback', r.stdout + r.stderr)

    def test_missing(self):
        r = self.verify(archive=os.path.join(self.scratch, 'none.cds'))
        self.assertEqual(r.returncode, 2)
        self.assertIn('no such file', r.stderr)

    def test_forged_module_is_reported(self):
        def mutate(data, h, e):
            struct.pack_into('<Q', data, e['code'] + CO_CONSTS,
                             struct.unpack_from(
                                 '<Q', data, e['code'] + CO_LINETABLE)[0])
        path = ForgedArchiveTests.forge(self, mutate, 'cdsapp.shapes')
        for deep in ((), ('--deep',)):
            with self.subTest(deep=deep):
                r = self.verify(*deep, archive=path)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertRegex(r.stdout,
                                 r'source cdsapp.shapes \(.*\): .*'
                                 r'\(corrupt archive\)')
                self.assertIn(' 1 corrupt', r.stdout)


class VerifyStaleTests(AppTestCase):

    def test_stale_entry(self):
        self.trace_and_dump()
        shapes = os.path.join(self.tmp, 'cdsapp', 'shapes.py')
        with open(shapes, 'a') as f:
            f.write('\n# edited\n')
        r = cds_tool('verify', self.archive, cwd=self.tmp)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stdout, r'source cdsapp.shapes \(.*shapes.py\): '
                                   r'stale: changed since the dump')
        self.assertIn(' 1 stale, 0 corrupt', r.stdout)


if __name__ == '__main__':
    unittest.main()
