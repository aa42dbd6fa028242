"""The shape of our C code (Tools/pycds/c_layout.py): no file over 900
lines, no function over 120 but a type switch, no cycle in the calls
between our files."""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
TOOL = os.path.join(SRC_ROOT, 'Tools', 'pycds', 'c_layout.py')


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, '--check', *args],
                          capture_output=True, text=True, timeout=120)


@unittest.skipUnless(os.path.isfile(TOOL)
                     and os.path.isfile(os.path.join(SRC_ROOT, 'Python',
                                                     'cds_hooks.c')),
                     'not a pycds source tree')
class LayoutTests(unittest.TestCase):

    def test_source_tree(self):
        r = run_tool()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('no cycle', r.stdout)
        self.assertIn('cds_hooks.c', r.stdout)

    def write(self, root, name, text):
        os.makedirs(os.path.join(root, 'Python'), exist_ok=True)
        with open(os.path.join(root, 'Python', name), 'w') as f:
            f.write(textwrap.dedent(text))

    def test_cycle_is_reported(self):
        with tempfile.TemporaryDirectory() as root:
            self.write(root, 'cds_a.c', '''\
                int
                _PyCDS_A(void)
                {
                    return _PyCDS_B();
                }
                ''')
            self.write(root, 'cds_b.c', '''\
                static int
                helper(void)
                {
                    return 0;
                }

                int
                _PyCDS_B(void)
                {
                    return _PyCDS_A() + helper();
                }
                ''')
            r = run_tool('--root', root)
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn('cycle: cds_a.c -> cds_b.c -> cds_a.c', r.stdout)

    def test_long_file_and_function_are_reported(self):
        with tempfile.TemporaryDirectory() as root:
            body = ''.join('    x++;\n' for _ in range(130))
            self.write(root, 'cds_long.c',
                       'static int\nlong_one(int x)\n{\n' + body
                       + '    return x;\n}\n')
            r = run_tool('--root', root, '--max-lines', '100')
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn('cds_long.c: 135 lines (limit 100)', r.stdout)
            self.assertIn('long_one() is 134 lines (limit 120)', r.stdout)


if __name__ == '__main__':
    unittest.main()
