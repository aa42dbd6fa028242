"""python -m cds: the archive tool (verify, info, list, map, train)."""

import json
import os
import struct
import sys
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.test_untrusted import (
    CO_CONSTS, CO_LINETABLE, ForgedArchiveTests)
from test.test_cds.util import (AppTestCase, clean_env, read_list,
                                run_python)


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


class InspectTests(AppTestCase):
    """info, list and map on good archives and on every kind of bad one."""

    ARCHIVE_PER_CLASS = True

    def variant(self, name, data):
        path = os.path.join(self.scratch, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def bad_archives(self):
        """(path, what the tool must say) for each kind of bad file."""
        h = cdsformat.read_header(self.good)
        damaged = bytearray(self.good)
        damaged[h['index_offset'] + 20] ^= 0xff
        return [
            (self.variant('cut.cds', self.good[:5000]), 'truncated'),
            (self.variant('short.cds', self.good[:40]), 'truncated'),
            (self.variant('damaged.cds', damaged),
             'damaged (index checksum mismatch)'),
            (self.variant('version.cds',
                          cdsformat.set_header(self.good, format_version=3)),
             'archive format version 3'),
            (self.variant('text.cds', b'hello\n' * 100),
             'not a pycds archive'),
            (self.variant('empty.cds', b''), 'not a pycds archive'),
            (os.path.join(self.scratch, 'missing.cds'), 'cannot open'),
        ]

    def foreign(self):
        return self.variant('foreign.cds', cdsformat.set_header(
            self.good, fingerprint=bytes(range(32))))

    def test_info(self):
        r = cds_tool('info', self.archive)
        self.assertEqual(r.returncode, 0, r.stderr)
        entries = cdsformat.read_index(self.good)
        kinds = [e['kind'] for e in entries]
        modules = kinds.count('source') + kinds.count('frozen')
        self.assertIn(f'modules:        {modules} ', r.stdout)
        self.assertIn(f'regexes:        {kinds.count("regex")} ', r.stdout)
        self.assertIn(f'strings:        {kinds.count("string")} ', r.stdout)
        self.assertIn("(this interpreter's build)", r.stdout)
        self.assertIn(f'format version: {cdsformat.FORMAT_VERSION}', r.stdout)
        for region in cdsformat.REGIONS:
            self.assertRegex(r.stdout, rf'\n  {region} +\d+\.\d\d MB')
        r = cds_tool('info', '--json', self.archive)
        info = json.loads(r.stdout)
        self.assertEqual((info['modules'], info['file_size'],
                          info['this_interpreter'], info['usable_here']),
                         (len(entries), len(self.good), True, True))
        self.assertEqual(info['fingerprint'],
                         cdsformat.read_header(self.good)['fingerprint'].hex())

    def test_info_foreign(self):
        # another build's archive: still described, whose it is said
        path = self.foreign()
        r = cds_tool('info', path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('build:          0001020304050607... '
                      '(another interpreter build', r.stdout)
        self.assertIn('not usable by this interpreter: made by another '
                      'interpreter build', r.stdout)
        info = json.loads(cds_tool('info', '--json', path).stdout)
        self.assertEqual((info['this_interpreter'], info['usable_here']),
                         (False, False))
        # verify says this interpreter cannot use it, and why
        r = cds_tool('verify', path)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, f'{path}: not usable: made by a different '
                                   'interpreter build\n')
        # list and map read it all the same
        for command in ('list', 'map'):
            with self.subTest(command=command):
                r = cds_tool(command, path)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn('cdsapp.shapes', r.stdout)

    def test_bad_archives(self):
        for path, message in self.bad_archives():
            for command in ('info', 'list', 'map', 'verify'):
                with self.subTest(file=os.path.basename(path),
                                  command=command):
                    r = cds_tool(command, path)
                    self.assertIn(r.returncode, (1, 2), r.stdout + r.stderr)
                    self.assertNotIn('Traceback', r.stdout + r.stderr)
                    if command != 'verify':
                        self.assertEqual(r.stdout, '')
                        self.assertEqual(r.stderr, f'{path}: {message}'
                                         + r.stderr[len(path) + 2
                                                    + len(message):])
                        self.assertTrue(r.stderr.endswith('\n'))
                        j = cds_tool(command, '--json', path)
                        self.assertEqual(j.returncode, 1)
                        self.assertIn(message, json.loads(j.stdout)['problem'])

    def test_special_file_is_not_read(self):
        fifo = os.path.join(self.scratch, 'fifo.cds')
        os.mkfifo(fifo)
        for command in ('info', 'list', 'map'):
            with self.subTest(command=command):
                r = cds_tool(command, fifo, timeout=60)
                self.assertEqual((r.returncode, r.stderr),
                                 (1, f'{fifo}: not a regular file\n'))

    def test_list(self):
        r = cds_tool('list', self.archive)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = {line.split()[0]: line.split() for line in
                 r.stdout.splitlines()}
        entries = cdsformat.read_index(self.good)
        self.assertEqual(set(lines), {e['name'] for e in entries})
        shapes = lines['cdsapp.shapes']
        self.assertEqual(shapes[2],
                         os.path.join(self.tmp, 'cdsapp', 'shapes.py'))
        self.assertGreater(int(shapes[1]), 0)
        rows = json.loads(cds_tool('list', '--json', self.archive).stdout)
        self.assertEqual(len(rows), len(entries))
        self.assertEqual({r['kind'] for r in rows}
                         - {'source', 'frozen', 'regex', 'string'}, set())

    def test_map(self):
        result = json.loads(cds_tool('map', '--json', self.archive).stdout)
        h = cdsformat.read_header(self.good)
        entries = cdsformat.read_index(self.good)
        self.assertEqual(len(result['modules']), len(entries))
        for m in result['modules']:
            for region, (lo, hi) in m['ranges'].items():
                # each module's range lies in its region, and holds its
                # code object in 'code'
                rlo, rhi = result['regions'][region]
                self.assertTrue(rlo <= lo <= hi <= rhi, (m['name'], region))
            lo, hi = m['ranges']['code']
            self.assertTrue(lo <= m['code'] < hi, m['name'])
        self.assertEqual(result['regions']['str'],
                         [h['str_offset'], h['str_offset'] + h['str_size']])
        r = cds_tool('map', '--module', 'cdsapp.shapes', self.archive)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [l for l in r.stdout.splitlines() if l.startswith('cdsapp')]
        self.assertEqual(len(rows), 1)
        self.assertIn('total (1 modules)', r.stdout)

    def test_stale_archive_is_described(self):
        # info, list and map describe the file; verify says what is stale
        tmp = self.variant('stale.cds', self.good)
        shapes = os.path.join(self.tmp, 'cdsapp', 'shapes.py')
        with open(shapes) as f:
            source = f.read()
        self.addCleanup(self._restore, shapes, source)
        with open(shapes, 'a') as f:
            f.write('\n# edited\n')
        for command in ('info', 'list', 'map'):
            with self.subTest(command=command):
                r = cds_tool(command, tmp)
                self.assertEqual(r.returncode, 0, r.stderr)
        r = cds_tool('verify', tmp)
        self.assertEqual(r.returncode, 1)
        self.assertIn('1 stale', r.stdout)

    @staticmethod
    def _restore(path, source):
        with open(path, 'w') as f:
            f.write(source)


class TrainTests(AppTestCase):

    def train(self, *args, **kwargs):
        return cds_tool('train', '-o', self.archive, *args, cwd=self.tmp,
                        **kwargs)

    def test_train_then_share(self):
        before = set(os.listdir(self.tmp))
        r = self.train('--', sys.executable, self.main)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r'app.cds: \d+ modules traced')
        self.assertIn('cds: dump: ', r.stderr)
        off = self.python('-X', 'cds=off', self.main)
        on, info = self.share_info(code=self.app_code(
            'import runpy; runpy.run_path(%r, run_name="__main__")'
            % self.main))
        self.assertEqual(on.stdout.splitlines()[:-1], off.stdout.splitlines())
        names = {e['name'] for e in cdsformat.read_index(
            open(self.archive, 'rb').read())}
        self.assertIn('cdsapp.shapes', names)
        self.assertGreater(info['served'], 0)
        # no list or lock file is left anywhere
        self.assertEqual(set(os.listdir(self.tmp)) - before, {'app.cds'})

    def test_child_processes_are_traced(self):
        child = os.path.join(self.tmp, 'parent.py')
        with open(child, 'w') as f:
            f.write('import subprocess, sys\n'
                    f'subprocess.run([sys.executable, {self.main!r}], '
                    'check=True)\n')
        r = self.train('--', sys.executable, child)
        self.assertEqual(r.returncode, 0, r.stderr)
        names = {e['name'] for e in cdsformat.read_index(
            open(self.archive, 'rb').read())}
        self.assertIn('cdsapp.shapes', names)

    def test_from_a_list(self):
        self.python(*['-X', 'cds=trace', '-X', f'cds_list={self.lst}'],
                    self.main)
        r = self.train('--list', self.lst, '-q')
        self.assertEqual((r.returncode, r.stdout), (0, ''), r.stderr)
        self.assertTrue(os.path.exists(self.archive))

    def test_failures_write_nothing(self):
        cases = [
            (('--', sys.executable, '-c', 'raise SystemExit(3)'),
             'the command exited with status 3; no archive written'),
            (('--', 'true'), 'no module was traced'),
            (('--', os.path.join(self.tmp, 'nonexistent')), 'cannot run'),
            ((), 'give a command to trace'),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = self.train(*args)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(message, r.stderr)
                self.assertNotIn('Traceback', r.stderr)
                self.assertFalse(os.path.exists(self.archive))

    def test_environment_settings_do_not_leak(self):
        # a strict or verbose setting meant for the command's later runs
        # does not reach the trace or the dump
        env = clean_env(PYTHONCDSSTRICT='1', PYTHONCDS='off',
                        PYTHONCDSARCHIVE=os.path.join(self.tmp, 'x.cds'))
        r = self.train('-q', '--', sys.executable, self.main, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        # the command's output, and nothing of train's with -q
        self.assertEqual(r.stdout, self.python('-X', 'cds=off',
                                               self.main).stdout)
        self.assertTrue(os.path.exists(self.archive))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'x.cds')))


if __name__ == '__main__':
    unittest.main()
