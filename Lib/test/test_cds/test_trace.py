"""TRACE mode: the module list a traced run writes."""

import os
import stat
import subprocess
import sys
import unittest

from test.test_cds.util import (clean_env, read_list, run_python, temp_dir,
                                trace_args, unprivileged)


class TraceTests(unittest.TestCase):

    def setUp(self):
        self.tmp = temp_dir(self.addCleanup)
        self.lst = os.path.join(self.tmp, 'app.lst')

    def trace(self, code, *args, lst=None, check=True, **kwargs):
        r = run_python(*trace_args(lst or self.lst), *args, '-c', code,
                       cwd=self.tmp, **kwargs)
        if check:
            self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def names(self, lst=None):
        return [name for name, kind, path in read_list(lst or self.lst)]

    def test_records_imported_modules(self):
        self.trace('import json, email.message')
        entries = read_list(self.lst)
        by_name = {name: (kind, path) for name, kind, path in entries}
        import json, email.message
        self.assertEqual(by_name['json'], ('source', json.__file__))
        self.assertEqual(by_name['email.message'],
                         ('source', email.message.__file__))
        # the import system's own frozen modules are recorded too
        self.assertEqual(by_name['_frozen_importlib'], ('frozen', None))
        # built-in and extension modules are not
        self.assertNotIn('sys', by_name)
        self.assertNotIn('_json', by_name)
        self.assertEqual(len(entries), len(set(entries)))

    def test_frozen_start_up_modules(self):
        self.trace('pass', '-X', 'frozen_modules=on')
        entries = dict((n, k) for n, k, p in read_list(self.lst))
        for name in ('codecs', 'io', 'abc', 'os', 'site', 'posixpath'):
            self.assertEqual(entries.get(name), 'frozen', name)

    def test_format(self):
        self.trace('import json')
        with open(self.lst, encoding='utf-8') as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], '# pycds module list 1')
        for line in lines[1:]:
            fields = line.split('\t')
            self.assertIn(fields[1], ('source', 'frozen', 'regex', 'string'))
            if fields[1] == 'string':
                # exec() and eval(): "START FLAGS FEATURE HEX"
                self.assertEqual(fields[0], 'builtins')
                self.assertRegex(fields[2], r'^\d+ \d+ \d+ ([0-9a-f]{2})*$')
            elif fields[1] == 'regex':
                # re's own patterns: "FLAGS TYPE HEX"
                self.assertEqual(fields[0], 're')
                self.assertRegex(fields[2], r'^\d+ [sb] ([0-9a-f]{2})*$')
            elif fields[1] == 'source':
                self.assertEqual(len(fields), 3)
                self.assertTrue(os.path.isabs(fields[2]))
            else:
                self.assertEqual(len(fields), 2)

    def test_written_after_sys_exit_and_exception(self):
        r = self.trace('import json; import sys; sys.exit(3)', check=False)
        self.assertEqual(r.returncode, 3)
        self.assertIn('json', self.names())
        r = self.trace('import email.message; raise KeyError("boom")',
                       check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('KeyError', r.stderr)
        self.assertIn('email.message', self.names())
        self.assertIn('json', self.names())

    def test_merge_across_runs(self):
        self.trace('import json')
        first = self.names()
        self.trace('import email.message')
        second = self.names()
        self.assertEqual(second[:len(first)], first)   # stable order
        self.assertIn('json', second)
        self.assertIn('email.message', second)
        self.assertEqual(len(second), len(set(read_list(self.lst))))
        # a run importing nothing new leaves the file as it is
        before = os.stat(self.lst)
        self.trace('import json')
        after = os.stat(self.lst)
        self.assertEqual(before.st_ino, after.st_ino)

    def test_atomic_write_leaves_no_temporary_files(self):
        self.trace('import json')
        leftovers = [f for f in os.listdir(self.tmp)
                     if f not in ('app.lst', 'app.lst.lock')]
        self.assertEqual(leftovers, [])

    def test_children_trace_through_environment(self):
        code = ('import subprocess, sys; '
                'subprocess.run([sys.executable, "-c", "import json"], check=True)')
        env = clean_env(PYTHONCDS='trace', PYTHONCDSLIST=self.lst)
        r = run_python('-c', code, env=env, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stderr)
        names = self.names()
        self.assertIn('subprocess', names)
        self.assertIn('json', names)

    def test_concurrent_tracers_lose_no_names(self):
        mods = ['json', 'email.message', 'argparse', 'decimal', 'ast',
                'tempfile', 'pathlib', 'dataclasses']
        env = clean_env(PYTHONCDS='trace', PYTHONCDSLIST=self.lst)
        procs = [subprocess.Popen([sys.executable, '-c', f'import {m}'],
                                  env=env, cwd=self.tmp)
                 for m in mods * 2]
        for p in procs:
            self.assertEqual(p.wait(timeout=120), 0)
        names = self.names()
        for m in mods:
            self.assertIn(m, names)
        self.assertEqual(len(names), len(set(read_list(self.lst))))

    def test_unwritable_list(self):
        bad = os.path.join(self.tmp, 'missing-dir', 'app.lst')
        r = self.trace('print("out")', lst=bad, check=False)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout, 'out\n')
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn('cds: warning: cannot write module list', r.stderr)
        self.assertIn(bad, r.stderr)
        # the exit status of the program is kept
        r = self.trace('import sys; sys.exit(5)', lst=bad, check=False)
        self.assertEqual(r.returncode, 5)

    def test_read_only_directory(self):
        # root writes anywhere: as root, the interpreter runs as "nobody"
        user = unprivileged()
        mode = stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP \
            | stat.S_IROTH | stat.S_IXOTH
        os.chmod(self.tmp, mode)
        self.addCleanup(os.chmod, self.tmp, stat.S_IRWXU)
        r = self.trace('print("out")', check=False, **user)
        self.assertEqual((r.returncode, r.stdout), (0, 'out\n'))
        self.assertIn('cds: warning: cannot write module list', r.stderr)
        self.assertIn(self.lst, r.stderr)
        self.assertEqual(os.listdir(self.tmp), [])
        # the same user writes it where it may
        os.chmod(self.tmp, mode | stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        r = self.trace('pass', **user)
        self.assertEqual(r.stderr, '')
        self.assertIn('_frozen_importlib', self.names())

    def test_garbage_list_is_reported_and_kept(self):
        garbage = '# pycds module list 1\njson\tsource\t/x/json.py\nthis is not a list\n'
        with open(self.lst, 'w') as f:
            f.write(garbage)
        r = self.trace('import json', check=False)
        self.assertEqual(r.returncode, 0)
        self.assertIn('line 3', r.stderr)
        self.assertIn(self.lst, r.stderr)
        with open(self.lst) as f:
            self.assertEqual(f.read(), garbage)

    def test_binary_garbage(self):
        with open(self.lst, 'wb') as f:
            f.write(b'\x7fELF\x00\x01\x02\n')
        r = self.trace('pass', check=False)
        self.assertEqual(r.returncode, 0)
        self.assertIn('line 1', r.stderr)
        with open(self.lst, 'rb') as f:
            self.assertEqual(f.read(), b'\x7fELF\x00\x01\x02\n')

    def test_off_writes_nothing(self):
        r = run_python('-c', 'import json', cwd=self.tmp)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(os.listdir(self.tmp), [])


if __name__ == '__main__':
    unittest.main()
