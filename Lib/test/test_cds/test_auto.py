"""-X cds=auto: share mode that creates and refreshes its application
archive at exit."""

import json
import os
import subprocess
import sys
import time
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import (INFO, AppTestCase, clean_env, run_python,
                                unprivileged)


class AutoTests(AppTestCase):

    def auto(self, *options, script=None, archive=None, env=None, **kwargs):
        """Run the application (or 'script', a list) in auto mode."""
        return run_python('-X', 'cds=auto',
                          '-X', f'cds_archive={archive or self.archive}',
                          *options, *(script or [self.main]), env=env,
                          cwd=self.tmp, **kwargs)

    def auto_info(self, *options, **kwargs):
        code = self.app_code('import runpy; runpy.run_path(%r)\n' % self.main)
        r = self.auto(*options, script=['-c', code + INFO], **kwargs)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r, json.loads(r.stdout.splitlines()[-1])

    def names(self):
        with open(self.archive, 'rb') as f:
            return {e['name'] for e in cdsformat.read_index(f.read())}

    def off(self):
        return self.python('-X', 'cds=off', self.main).stdout

    def test_first_run_creates_second_serves(self):
        expected = self.off()
        r = self.auto()
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, expected, ''))
        self.assertIn('cdsapp.shapes', self.names())
        r, info = self.auto_info()
        self.assertEqual(info['mode'], 'auto')
        self.assertEqual(info['archives'][0]['active'], True)
        self.assertGreater(info['archives'][0]['served'], 0)
        self.assertEqual(info['stale'], 0)
        # a run that needs no refresh writes nothing
        mtime = os.stat(self.archive).st_mtime_ns
        r = self.auto()
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, expected, ''))
        self.assertEqual(os.stat(self.archive).st_mtime_ns, mtime)
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         sorted(['app.cds', 'app.cds.lst', 'app.cds.lst.lock',
                                 'cdsapp', 'main.py']))

    def test_edited_source_refreshes(self):
        self.auto()
        shapes = os.path.join(self.tmp, 'cdsapp', 'shapes.py')
        with open(shapes, 'a') as f:
            f.write('\nprint("edited")\n')
        r = self.auto('-X', 'cds_verbose')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('edited', r.stdout)
        self.assertRegex(r.stderr, r"cds: auto: '.*app.cds' refreshed in "
                         r"[\d.]+ s \(0 new modules, 1 stale\)")
        r, info = self.auto_info()
        self.assertIn('edited', r.stdout)
        self.assertEqual((info['stale'], info['archives'][0]['stale']), (0, 0))
        self.assertGreater(info['archives'][0]['served'], 0)

    def test_new_module_refreshes(self):
        self.auto()
        with open(os.path.join(self.tmp, 'extra.py'), 'w') as f:
            f.write('VALUE = 17\n')
        with open(self.main, 'a') as f:
            f.write('\nimport extra; print("extra", extra.VALUE)\n')
        self.assertNotIn('extra', self.names())
        r = self.auto()
        self.assertEqual((r.returncode, r.stderr), (0, ''))
        self.assertIn('extra 17', r.stdout)
        self.assertIn('extra', self.names())
        r = self.auto('-X', 'cds_verbose=2')
        self.assertIn('cds: served: extra (application archive)', r.stderr)
        self.assertNotIn('cds: auto:', r.stderr)

    def test_unusable_archive_is_replaced(self):
        with open(self.archive, 'wb') as f:
            f.write(b'not an archive' * 100)
        r = self.auto()
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, self.off(), ''))
        self.assertIn('cdsapp.shapes', self.names())

    def test_program_behaviour_unchanged(self):
        # exit status, output and atexit handlers are the program's own
        prog = os.path.join(self.tmp, 'prog.py')
        with open(prog, 'w') as f:
            f.write('import atexit, sys\n'
                    f'sys.path.insert(0, {self.tmp!r})\n'
                    'import cdsapp\n'
                    'atexit.register(print, "atexit ran")\n'
                    'print("body"); sys.stderr.write("err\\n")\n'
                    'sys.exit(3)\n')
        off = self.python('-X', 'cds=off', prog, check=False)
        for _ in range(2):    # creating, then served
            r = self.auto(script=[prog])
            self.assertEqual((r.returncode, r.stdout, r.stderr),
                             (off.returncode, off.stdout, off.stderr))
        self.assertEqual(off.returncode, 3)
        self.assertIn('cdsapp.shapes', self.names())

    def test_unwritable_location(self):
        # a directory that cannot be written: silent, or one line under
        # -X cds_verbose; the program runs as always
        kwargs = unprivileged()
        os.chmod(self.tmp, 0o755)
        expected = self.off()
        archive = os.path.join(self.tmp, 'app.cds')
        r = self.auto(archive=archive, **kwargs)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, expected, ''))
        self.assertFalse(os.path.exists(archive))
        missing = os.path.join(self.scratch, 'no', 'such', 'dir', 'app.cds')
        r = self.auto(archive=missing)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, expected, ''))
        r = self.auto('-X', 'cds_verbose', archive=missing)
        self.assertEqual((r.returncode, r.stdout), (0, expected))
        lines = [l for l in r.stderr.splitlines() if l.startswith('cds: auto')]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn('cannot write module list', lines[0])

    def test_needs_an_archive_path(self):
        r = run_python('-X', 'cds=auto', '-c', 'pass')
        self.assertEqual(r.returncode, 1)
        self.assertIn('-X cds=auto needs an archive path', r.stderr)
        r = run_python('-c', INFO, env=clean_env(
            PYTHONCDS='AUTO', PYTHONCDSARCHIVE=self.archive))
        self.assertEqual(json.loads(r.stdout)['mode'], 'auto')

    def test_concurrent_exits_write_once(self):
        # 16 processes, no archive: one writes it, the others do not wait
        expected = self.off()
        procs = []
        start = time.monotonic()
        for _ in range(16):
            procs.append(subprocess.Popen(
                [sys.executable, '-X', 'cds_base=none', '-X', 'cds=auto',
                 '-X', f'cds_archive={self.archive}', '-X', 'cds_verbose',
                 self.main],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=clean_env(), cwd=self.tmp))
        results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read())
                   for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        elapsed = time.monotonic() - start
        refreshed = 0
        for rc, out, err in results:
            self.assertEqual((rc, out), (0, expected), err)
            auto = [l for l in err.splitlines() if l.startswith('cds: auto:')]
            refreshed += any(' refreshed in ' in l for l in auto)
            for line in auto:
                self.assertRegex(line, r'refreshed in|another process is '
                                       r'refreshing|was refreshed by another'
                                       r'|modules recorded')
        self.assertEqual(refreshed, 1, [r[2] for r in results])
        self.assertIn('cdsapp.shapes', self.names())
        # no temporary file left, and the archive is whole
        self.assertEqual(sorted(f for f in os.listdir(self.tmp)
                                if f.startswith('app.')),
                         ['app.cds', 'app.cds.lst', 'app.cds.lst.lock'])
        r = run_python('-m', 'cds', 'verify', self.archive)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertLess(elapsed, 120)


if __name__ == '__main__':
    unittest.main()
