"""The installation's default archive, application archives layered on it,
and -X cds_strict.

The default archive is where the interpreter looks for it (the standard
library's __pycache__); the tests that need a bad base archive name one
with -X cds_base, which is opened and checked the same way.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import (INFO, AppTestCase, clean_env, dump_args,
                                run_python, share_args, trace_args,
                                write_files, write_list)

ABI = 'd' if hasattr(sys, 'gettotalrefcount') else ''
DEFAULT = os.path.join(sys._stdlib_dir, '__pycache__',
                       f'stdlib.{sys.implementation.cache_tag}{ABI}.cds')
PROGRAM = 'import json, textwrap; print(json.dumps(textwrap.wrap("a b c", 3)))'


def info(*args, **kwargs):
    r = run_python(*args, '-c', INFO, default_archive=True, **kwargs)
    if r.returncode != 0:
        raise AssertionError(r.stderr)
    return json.loads(r.stdout)


def default_info(*args, **kwargs):
    return info(*args, **kwargs)['archives'][1]


@unittest.skipUnless(sysconfig.is_python_build() or os.path.exists(DEFAULT),
                     'an installation without its default archive')
class DefaultArchiveTests(unittest.TestCase):

    def test_made_by_make(self):
        self.assertTrue(os.path.isfile(DEFAULT), DEFAULT)

    def test_what_it_holds(self):
        with open(DEFAULT, 'rb') as f:
            entries = cdsformat.read_index(f.read())
        names = {e['name'] for e in entries if e['kind'] == 'source'}
        self.assertLessEqual({'os', 'json', 'json.decoder', 'asyncio',
                              'email.message', 'idlelib'}, names)
        left_out = ('test', 'idlelib.idle_test', 'turtledemo', '__hello__',
                    '__phello__')
        self.assertEqual([n for n in names if n in left_out
                          or n.startswith(tuple(p + '.' for p in left_out))],
                         [])
        frozen = {e['name'] for e in entries if e['kind'] == 'frozen'}
        self.assertIn('zipimport', frozen)
        self.assertFalse({n for n in frozen if n.startswith('__')})

    def test_used_with_no_option(self):
        i = info()
        d = i['archives'][1]
        self.assertEqual((d['role'], d['path'], d['active']),
                         ('default', DEFAULT, True))
        self.assertTrue(i['active'])
        self.assertGreater(d['served'], 0)
        self.assertEqual(i['archives'][0]['path'], None)

    def test_environment_flags_keep_it(self):
        # it belongs to the installation, as the .pyc files do
        for flag in ('-E', '-I', '-s', '-S'):
            with self.subTest(flag=flag):
                self.assertTrue(default_info(flag)['active'])

    def test_off(self):
        for args, env in [(('-X', 'cds=off'), None),
                          ((), clean_env(PYTHONCDS='off')),
                          (('-X', 'cds_base=none'), None),
                          ((), clean_env(PYTHONCDSBASE='none'))]:
            with self.subTest(args=args, env=env is not None):
                i = info(*args, env=env)
                self.assertFalse(i['active'])
                self.assertEqual(i['served'], 0)

    def test_same_output_as_off(self):
        on = run_python('-c', PROGRAM, default_archive=True)
        off = run_python('-X', 'cds=off', '-c', PROGRAM)
        self.assertEqual((on.returncode, on.stdout, on.stderr),
                         (off.returncode, off.stdout, off.stderr))

    @unittest.skipUnless(os.path.isdir('/proc/self/fd'), 'needs /proc')
    def test_no_descriptor_left_open(self):
        # copy mode reads modules from the file, which is open only while a
        # module is read: a child sees the descriptors stock CPython has
        # (test_subprocess's pass_fds tests list them)
        code = ('import json, email.message, decimal, os; '
                'print(sorted(os.listdir("/proc/self/fd")))')
        for options in ((), ('-X', 'cds_in_place')):
            with self.subTest(options=options):
                on = run_python(*options, '-c', code, default_archive=True)
                off = run_python('-X', 'cds=off', '-c', code)
                self.assertEqual(on.stdout, off.stdout)

    def test_verbose_summary_at_exit(self):
        # level 1 tells whether the archive helped, in one line at exit
        r = run_python('-X', 'cds_verbose', '-c', 'import json',
                       default_archive=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        last = r.stderr.splitlines()[-1]
        self.assertRegex(last, r'^cds: exit: [1-9]\d* modules served '
                         r'\([1-9]\d* from the default archive\), 0 stale, '
                         r'0 not in the archive, 0 refused$')
        r = run_python('-X', 'cds=off', '-X', 'cds_verbose', '-c', 'pass')
        self.assertEqual(r.stderr, '')

    def test_stats_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            stats = os.path.join(tmp, 'stats')
            for _ in range(2):
                r = run_python('-c', 'import json', default_archive=True,
                               env=clean_env(PYTHONCDSSTATS=stats))
                self.assertEqual((r.returncode, r.stderr), (0, ''))
            with open(stats) as f:
                lines = f.read().splitlines()
        self.assertEqual(len(lines), 2)
        for line in lines:
            fields = dict(w.split('=') for w in line.split())
            self.assertEqual(fields['active'], '1')
            self.assertGreater(int(fields['served']), 0)
            self.assertEqual(fields['stale'], '0')

    def test_moved_source_is_named(self):
        # a module archived from another file is not "not in the archive"
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(os.path.join(sys._stdlib_dir, 'json'),
                            os.path.join(tmp, 'json'))
            r = run_python('-X', 'cds_verbose=2', '-c', 'import json',
                           default_archive=True,
                           env=clean_env(PYTHONPATH=tmp))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f'cds: miss: json (imported from '
                      f'{os.path.join(tmp, "json", "__init__.py")}; the '
                      f'default archive holds it from '
                      f'{os.path.join(sys._stdlib_dir, "json", "__init__.py")})',
                      r.stderr)
        self.assertRegex(r.stderr, r'\n.*[1-9]\d* not in the archive')

    def test_strict_with_a_usable_archive(self):
        r = run_python('-X', 'cds_strict', '-c', 'print("ran")',
                       default_archive=True)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, 'ran\n', ''))

    def test_venv_uses_it(self):
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, 'venv')
            subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                            venv], check=True, env=clean_env())
            python = os.path.join(venv, 'bin', 'python')
            d = default_info(python=python)
            self.assertEqual((d['path'], d['active']), (DEFAULT, True))
            self.assertGreater(d['served'], 0)


class BadBaseArchiveTests(unittest.TestCase):
    """A base archive that cannot be used: silently not used, the reason
    under -X cds_verbose, start-up stopped under -X cds_strict."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='test_cds-')
        cls.good = os.path.join(cls.tmp, 'good.cds')
        lst = os.path.join(cls.tmp, 'good.lst')
        write_list(lst, [('textwrap', 'source',
                          os.path.join(sys._stdlib_dir, 'textwrap.py'))])
        r = run_python(*dump_args(lst, cls.good), '-X', 'cds_base=none')
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        with open(cls.good, 'rb') as f:
            cls.data = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def check(self, path, reason):
        base = ('-X', f'cds_base={path}')
        expected = run_python('-X', 'cds=off', '-c', PROGRAM)
        r = run_python(*base, '-c', PROGRAM)
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, expected.stdout, ''))
        self.assertFalse(info(*base)['archives'][1]['active'])
        r = run_python(*base, '-X', 'cds_verbose', '-c', 'pass')
        self.assertIn(f"cds: base archive '{path}' not used: {reason}",
                      r.stderr)
        for strict in (('-X', 'cds_strict'), ()):
            env = clean_env(PYTHONCDSSTRICT='1') if not strict else None
            with self.subTest(strict=strict or 'PYTHONCDSSTRICT'):
                r = run_python(*base, *strict, '-c', 'print("ran")', env=env)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertEqual(r.stdout, '')
                self.assertIn(f"cds_strict: the base archive '{path}' cannot "
                              f"be used: {reason}", r.stderr)

    def test_good_one_is_used(self):
        i = info('-X', f'cds_base={self.good}')
        self.assertTrue(i['archives'][1]['active'])
        r = run_python('-X', f'cds_base={self.good}', '-X', 'cds_strict',
                       '-c', 'pass')
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_missing(self):
        self.check(os.path.join(self.tmp, 'missing.cds'), 'no such file')

    def test_directory(self):
        self.check(self.tmp, 'not a regular file')

    def test_other_build(self):
        h = cdsformat.read_header(self.data)
        fp = bytearray(h['fingerprint'])
        fp[0] ^= 1
        self.check(self.write('other.cds', cdsformat.set_header(
            self.data, fingerprint=bytes(fp))), 'made by a different '
            'interpreter build')

    def test_corrupt(self):
        h = cdsformat.read_header(self.data)
        data = bytearray(self.data)
        data[h['index_offset'] + 3] ^= 0x40
        self.check(self.write('corrupt.cds', data),
                   'index checksum mismatch (corrupt archive)')

    def test_truncated(self):
        self.check(self.write('short.cds', self.data[:len(self.data) // 2]),
                   'file size does not match the header (truncated?)')

    @unittest.skipUnless(hasattr(os, 'geteuid') and os.geteuid() != 0,
                         'root reads any file')
    def test_unreadable(self):
        path = self.write('unreadable.cds', self.data)
        os.chmod(path, 0)
        self.check(path, 'cannot open the file')

    def test_strict_without_any_archive(self):
        r = run_python('-X', 'cds_base=none', '-X', 'cds_strict', '-c', 'pass')
        self.assertEqual(r.returncode, 1)
        self.assertIn('cds_strict: no archive to use', r.stderr)

    def test_strict_bad_value(self):
        r = run_python('-X', 'cds_strict=maybe', '-c', 'pass')
        self.assertEqual(r.returncode, 1)
        self.assertIn('bad value for option -X cds_strict', r.stderr)


class LayeringTests(AppTestCase):
    """An application archive over a base archive."""

    MOD = os.path.join('cdsapp', 'shapes.py')

    def edit(self):
        # a new size: stale for an entry made before
        with open(os.path.join(self.tmp, self.MOD), 'a') as f:
            f.write('\nEDITED = True\n')

    def dump_into(self, archive, *base):
        return self.python(*dump_args(self.lst, archive),
                           *(base or ('-X', 'cds_base=none')))

    def stats(self, app, base, *args):
        r = self.python('-X', f'cds_base={base}', *share_args(app),
                        '-c', self.app_code('''
            import json, _cds, cdsapp.shapes
            print(getattr(cdsapp.shapes, 'EDITED', False))
            print(json.dumps(_cds.info()['archives']))'''))
        out, archives = r.stdout.rsplit('\n', 2)[:2]
        return out, archives and json.loads(archives)

    def test_fresh_in_one_stale_in_the_other(self):
        self.python(*trace_args(self.lst), self.main)
        base = os.path.join(self.scratch, 'base.cds')
        app = os.path.join(self.scratch, 'app.cds')
        self.dump_into(base)
        self.edit()
        self.dump_into(app)
        # the application archive is current: served from it
        out, (a, b) = self.stats(app, base)
        self.assertEqual(out, 'True')
        self.assertGreater(a['served'], 0)
        self.assertEqual(a['stale'], 0)
        # the other way round: stale in the application archive, current
        # in the base
        base2 = os.path.join(self.scratch, 'base2.cds')
        self.dump_into(base2)
        app2 = base
        out, (a, b) = self.stats(app2, base2)
        self.assertEqual(out, 'True')
        self.assertGreater(a['stale'], 0)
        self.assertGreater(b['served'], 0)
        # the program's output is that of a run with the archives off
        for archive, base_ in ((app, base), (app2, base2)):
            on = self.python('-X', f'cds_base={base_}', *share_args(archive),
                             self.main)
            off = self.python('-X', 'cds=off', self.main)
            self.assertEqual(on.stdout, off.stdout)

    def test_dump_leaves_out_what_the_base_serves(self):
        self.python(*trace_args(self.lst), self.main)
        base = os.path.join(self.scratch, 'base.cds')
        app = os.path.join(self.scratch, 'app.cds')
        self.dump_into(base)
        # one module changed since the base was made: only it is dumped
        self.edit()
        r = self.dump_into(app, '-X', f'cds_base={base}')
        self.assertRegex(r.stderr, r'1 modules archived, \d+ in the base '
                                   r'archive')
        with open(app, 'rb') as f:
            names = [e['name'] for e in cdsformat.read_index(f.read())]
        self.assertEqual(names, ['cdsapp.shapes'])
        out, (a, b) = self.stats(app, base)
        self.assertEqual(out, 'True')
        self.assertGreater(b['served'], 0)
        self.assertEqual(a['served'], 1)

    @unittest.skipUnless(os.path.exists(DEFAULT), 'no default archive')
    def test_dump_over_the_default_archive(self):
        # the application's list names standard-library modules too: the
        # default archive serves those
        self.python(*trace_args(self.lst), self.main)
        app = os.path.join(self.scratch, 'app.cds')
        r = self.python(*dump_args(self.lst, app), default_archive=True)
        self.assertRegex(r.stderr, r'in the base archive')
        with open(app, 'rb') as f:
            names = {e['name'] for e in cdsformat.read_index(f.read())
                     if e['kind'] not in ('regex', 'string')}
        self.assertTrue(names)
        self.assertTrue(all(n.startswith('cdsapp') for n in names), names)


class StdlibCommandTests(unittest.TestCase):
    """python -m cds stdlib, as make install runs it with DESTDIR."""

    def test_destdir(self):
        with tempfile.TemporaryDirectory() as tmp:
            final = os.path.join(tmp, 'final', 'lib')
            stage = os.path.join(tmp, 'stage')
            staged = stage + final
            write_files(staged, {
                'mymod.py': 'def f():\n    return 42\n',
                'mypkg/__init__.py': 'X = 1\n',
                'test/__init__.py': '',
                'test/test_x.py': 'pass\n'})
            r = run_python('-m', 'cds', 'stdlib', '--libdir', final,
                           '--destdir', stage)
            self.assertEqual(r.returncode, 0, r.stderr)
            archive = os.path.join(staged, '__pycache__', os.path.basename(DEFAULT))
            with open(archive, 'rb') as f:
                entries = cdsformat.read_index(f.read())
            sources = {e['name']: os.fsdecode(e['path']) for e in entries
                       if e['kind'] == 'source'}
            self.assertEqual(sources, {
                'mymod': os.path.join(final, 'mymod.py'),
                'mypkg': os.path.join(final, 'mypkg', '__init__.py')})
            self.assertIn('zipimport', {e['name'] for e in entries
                                        if e['kind'] == 'frozen'})
            # in its final place, the archive serves the files there
            os.makedirs(os.path.dirname(final))
            os.rename(staged, final)
            moved = os.path.join(final, '__pycache__', os.path.basename(DEFAULT))
            r = run_python('-X', f'cds_base={moved}', '-c', textwrap.dedent('''
                import _cds, mymod
                print(mymod.f(), mymod.f.__code__.co_filename)
                print(_cds.info()['archives'][1]['served'])'''),
                env=clean_env(PYTHONPATH=final))
            self.assertEqual(r.returncode, 0, r.stderr)
            result, served = r.stdout.splitlines()
            self.assertEqual(result, f'42 {os.path.join(final, "mymod.py")}')
            self.assertGreaterEqual(int(served), 1)


if __name__ == '__main__':
    unittest.main()
