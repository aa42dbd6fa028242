"""The code of strings exec() and eval() run: traced, archived and served
as the compiler would make it."""

import json
import unittest

from test.test_cds.util import (LIST_HEADER, ProgramTestCase, dump_args,
                                read_list, run_checked, run_python,
                                share_args, trace_args)

# What compiles strings as it runs: named tuples and data classes, exec()
# and eval() of str and bytes, with and without the caller's __future__
# flags; one string the compiler warns about, one it refuses, one that
# imports from __future__ (which the caller's flags would carry on).
PROGRAM = r'''
import collections, dataclasses, json, sys, warnings
warnings.simplefilter('always')
P = collections.namedtuple('P', 'x y')
@dataclasses.dataclass(order=True, frozen=True)
class D:
    a: int
    b: str = 'q'
out = [repr(P(1, 2)), repr(D(3)), D(1) < D(2), hash(D(1)) == hash(D(1)),
       P.__new__.__code__.co_filename, P.__new__.__code__.co_firstlineno,
       D.__init__.__code__.co_varnames, D.__init__.__qualname__]
ns = {}
exec('def f(a, b=2):\n    return a * b\nr = f(3)', ns)
out.append([ns['r'], ns['f'].__code__.co_name, ns['f'].__code__.co_filename])
out.append(eval('[x ** 2 for x in range(4)]'))
out.append(eval(b'1 + 2'))
exec('from __future__ import annotations\ndef g(x: undefined): pass', ns)
out.append(ns['g'].__annotations__)
for text in ("s = '\\d'", 'def (:'):
    try:
        with warnings.catch_warnings(record=True) as caught:
            exec(text, {})
        out.append([str(w.message) for w in caught])
    except SyntaxError as e:
        out.append(['error', e.msg, e.lineno])
import _cds
print(json.dumps(out))
print('strings served:', _cds.info()['strings'], file=sys.stderr)
'''



class ExecTests(ProgramTestCase):

    PROGRAM = PROGRAM
    COUNTER = 'strings'

    def test_trace_records_strings(self):
        run_checked(*trace_args(self.lst), self.prog, cwd=self.tmp)
        fields = [path for name, kind, path in read_list(self.lst)
                  if kind == 'string']
        texts = {bytes.fromhex(f.split(' ')[3]).decode(): f.split(' ')[:3]
                 for f in fields}
        # exec: Py_file_input (257), eval: Py_eval_input (258)
        self.assertEqual(texts['[x ** 2 for x in range(4)]'][0], '258')
        self.assertEqual(texts['def (:'][0], '257')
        self.assertIn('1 + 2', texts)
        self.assertTrue(any(t.startswith('lambda _cls, x, y:') for t in texts))
        self.assertTrue(any('def __init__(' in t for t in texts))
        self.assertEqual({name for name, kind, path in read_list(self.lst)
                          if kind == 'string'}, {'builtins'})

    def test_same_results_as_compiled(self):
        off, n_off = self.run_prog('-X', 'cds=off')
        r = self.trace_and_dump()
        # the warning, the syntax error and the __future__ import: left
        self.assertRegex(r.stderr, r'; \d+ strings archived, 0 in the base '
                                   r'archive, 3 left to compile\(\); ')
        shared, n = self.run_prog(*share_args(self.archive))
        self.assertEqual(shared, off)
        self.assertEqual(n_off, 0)
        # the named tuple, the data class's methods, exec, eval (str and
        # bytes)
        self.assertGreaterEqual(n, 5)
        # the warning is still given, the error still raised
        self.assertIn(["invalid escape sequence '\\d'"], shared)
        self.assertIn(['error', 'invalid syntax', 1], shared)

    def test_text_compared_whole(self):
        # an entry is served only for its very text: the same text with
        # one byte changed, or other flags, compiles
        run_checked(*trace_args(self.lst), '-c', 'eval("1 + 2")')
        run_checked(*dump_args(self.lst, self.archive))
        code = ('import _cds; a = eval("1 + 2"); b = eval("1 + 3"); '
                'c = eval(compile("1 + 2", "<string>", "eval")); '
                'print(a, b, c, _cds.info()["strings"])')
        r = run_checked(*share_args(self.archive), '-c', code)
        self.assertEqual(r.stdout.split(), ['3', '4', '3', '1'])

    def test_audit_event(self):
        # the "compile" event the parser raises for a text is raised for
        # an archived one too, and a hook that refuses it stops the run
        run_checked(*trace_args(self.lst), '-c', 'eval("1 + 2")')
        run_checked(*dump_args(self.lst, self.archive))
        code = ('import sys, _cds\n'
                'seen = []\n'
                'def hook(event, args):\n'
                '    if event == "compile" and args[0] == b"1 + 2":\n'
                '        seen.append(args)\n'
                '        if len(seen) == 2:\n'
                '            raise RuntimeError("refused")\n'
                'sys.addaudithook(hook)\n'
                'print(eval("1 + 2"), seen, _cds.info()["strings"])\n'
                'try:\n'
                '    eval("1 + 2")\n'
                'except RuntimeError as e:\n'
                '    print(e)\n')
        off = run_checked('-X', 'cds=off', '-c', code)
        r = run_checked(*share_args(self.archive), '-c', code)
        self.assertEqual(r.stdout.replace(' 1\n', ' 0\n', 1), off.stdout)
        self.assertEqual(r.stdout.splitlines(),
                         ["3 [(b'1 + 2', '<string>')] 1", 'refused'])

    def test_garbled_list_line(self):
        for field in ('257 0 13 6', '257 0 61', '257 0 13 6G', '257  0 13 61',
                      '-1 0 13 61'):
            with self.subTest(field=field):
                with open(self.lst, 'w') as f:
                    f.write(f'{LIST_HEADER}\nbuiltins\tstring\t{field}\n')
                r = run_python(*dump_args(self.lst, self.archive))
                self.assertEqual(r.returncode, 1)
                self.assertIn('line 2: not a module list entry', r.stderr)
                self.assertNotIn('Traceback', r.stderr)

    def test_listed_and_checked(self):
        run_checked(*trace_args(self.lst), self.prog, cwd=self.tmp)
        run_checked(*dump_args(self.lst, self.archive), cwd=self.tmp)
        r = run_checked('-m', 'cds', 'info', self.archive)
        self.assertRegex(r.stdout, r'strings: +[1-9]\d* \(code of strings')
        code = ('import _cds, json; print(json.dumps(sorted({k for k, n, p, '
                'problem in _cds.check() if problem is None})))')
        r = run_checked(*share_args(self.archive), '-c', code)
        self.assertIn('string', json.loads(r.stdout))


if __name__ == '__main__':
    unittest.main()
