"""The programs of regular expressions: traced, archived and served as
re._compiler.compile() would make them, and only for the re package that
made them."""

import json
import os
import re
import shutil
import unittest

from test.test_cds.util import (LIST_HEADER, ProgramTestCase, clean_env,
                                dump_args, read_list, run_checked,
                                run_python, share_args, trace_args)

# Patterns of each kind re compiles: named groups, bytes, flags (inline
# ones too), non-ASCII and lone surrogates, the empty pattern, one re
# warns about, one it refuses, and re.DEBUG, which prints the program.
PROGRAM = r'''
import json, re, sys, warnings
warnings.simplefilter('always')
class S(str):
    pass
PATTERNS = [
    (r'(?P<key>\w+)=(?P<value>\d+)(?:;|$)', 0),
    (rb'[a-f0-9]{2,}', re.IGNORECASE),
    (r'(?x) \b foo \s+ (bar)? \b', re.MULTILINE),
    ('caf\xe9+(\xdf)', re.IGNORECASE),
    ('x\udcff', 0),
    ('', 0),
    ('x[[y]', 0),
    ('(unclosed', 0),
    (S('subclass'), 0),
]
SUBJECT = 'a=1;bb=22  foo bar \nCAF\xc9\xc9\xdf abc12f x\udcff'
out = []
for pattern, flags in PATTERNS:
    try:
        with warnings.catch_warnings(record=True) as caught:
            c = re.compile(pattern, flags)
    except re.error as e:
        out.append(['error', str(e)])
        continue
    subject = SUBJECT.encode('ascii', 'replace') \
        if isinstance(pattern, bytes) else SUBJECT
    out.append([repr(c.pattern), c.flags, c.groups, dict(c.groupindex),
                [str(w.message) for w in caught],
                [m.span() for m in c.finditer(subject)]])
m = re.match(r'(?P<key>\w+)=(?P<value>\d+)(?:;|$)', 'a=1;')
out.append([m.groupdict(), m.lastgroup, m.span('value')])
import _cds
print(json.dumps(out))
print('regexes served:', _cds.info()['regexes'], file=sys.stderr)
'''



class RegexTests(ProgramTestCase):

    PROGRAM = PROGRAM
    COUNTER = 'regexes'

    def test_trace_records_patterns(self):
        run_checked(*trace_args(self.lst), self.prog, cwd=self.tmp)
        fields = {path for name, kind, path in read_list(self.lst)
                  if kind == 'regex'}
        self.assertIn('2 b ' + b'[a-f0-9]{2,}'.hex(), fields)
        self.assertIn('0 s ', fields)
        self.assertIn('2 s ' + 'caf\xe9+(\xdf)'.encode().hex(), fields)
        self.assertIn('0 s ' + 'x\udcff'.encode('utf-8', 'surrogatepass').hex(),
                      fields)
        # not a str or bytes: left out
        self.assertNotIn('0 s ' + b'subclass'.hex(), fields)
        for name, kind, path in read_list(self.lst):
            if kind == 'regex':
                self.assertEqual(name, 're')

    def test_same_results_as_re(self):
        off, served_off = self.run_prog('-X', 'cds=off')
        r = self.trace_and_dump()
        # a pattern re warns about, or refuses, stays re's to compile
        self.assertIn("regex 'x[[y]' not archived: Possible nested set",
                      r.stderr)
        self.assertRegex(r.stderr, r'; \d+ regular expressions archived, '
                                   r'0 in the base archive, 2 left to re; ')
        shared, n = self.run_prog(*share_args(self.archive))
        self.assertEqual(shared, off)
        self.assertEqual(served_off, 0)
        # the six archivable ones of PROGRAM, and those re compiles itself
        self.assertGreaterEqual(n, 6)
        # the warning of the pattern left to re is still given
        self.assertIn(['Possible nested set at position 2'],
                      [row[4] for row in shared if len(row) > 4])
        # re.DEBUG prints the program: never served
        code = ('import re; re.compile(r"(?P<key>\\w+)=(?P<value>\\d+)(?:;|$)",'
                ' re.DEBUG)')
        debug = run_checked(*share_args(self.archive), '-c', code)
        self.assertIn('SUBPATTERN 1 0 0', debug.stdout)

    def test_only_for_the_re_that_made_them(self):
        # A copy of the re package first on the path makes the programs;
        # once its parser is edited, they are not used.
        lib = os.path.join(self.tmp, 'lib')
        shutil.copytree(os.path.dirname(os.__file__) + '/re',
                        os.path.join(lib, 're'))
        env = clean_env(PYTHONPATH=lib)
        off, _ = self.run_prog('-X', 'cds=off', env=env)
        self.trace_and_dump(env=env)
        shared, n = self.run_prog(*share_args(self.archive), env=env)
        self.assertEqual(shared, off)
        self.assertGreaterEqual(n, 6)
        with open(os.path.join(lib, 're', '_parser.py'), 'a') as f:
            f.write('\n# edited after the dump\n')
        args = [*share_args(self.archive), '-X', 'cds_verbose=2']
        r = run_checked(*args, self.prog, cwd=self.tmp, env=env)
        self.assertEqual(json.loads(r.stdout), off)
        self.assertEqual(self.served(r), 0)
        self.assertIn('compiled by another version of re', r.stderr)

    def test_garbled_list_line(self):
        for field in ('2 s 6', '2 x 61', 's 61', '2 s 6G', '2  61'):
            with self.subTest(field=field):
                with open(self.lst, 'w') as f:
                    f.write(f'{LIST_HEADER}\nre\tregex\t{field}\n')
                r = run_python(*dump_args(self.lst, self.archive))
                self.assertEqual(r.returncode, 1)
                self.assertIn('line 2: not a module list entry', r.stderr)
                self.assertNotIn('Traceback', r.stderr)

    def test_listed_and_checked(self):
        self.trace_and_dump()
        r = run_checked('-m', 'cds', 'info', self.archive)
        self.assertRegex(r.stdout, r'regexes: +[1-9]\d* \(programs')
        code = ('import _cds, json; print(json.dumps(sorted({k for k, n, p, '
                'problem in _cds.check() if problem is None})))')
        r = run_checked(*share_args(self.archive), '-c', code)
        self.assertIn('regex', json.loads(r.stdout))


if __name__ == '__main__':
    unittest.main()
