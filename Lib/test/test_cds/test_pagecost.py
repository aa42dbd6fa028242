"""Tools/pycds/pagecost.py: what the machine charges for a page's first
touch, the figure the Doc's wall-time bound is explained with."""

import os
import re
import subprocess
import sys
import tempfile
import unittest

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
TOOL = os.path.join(SRC_ROOT, 'Tools', 'pycds', 'pagecost.py')


@unittest.skipUnless(os.path.isfile(TOOL), 'not a pycds source tree')
@unittest.skipUnless(sys.platform.startswith('linux'), 'Linux only')
class PageCostTests(unittest.TestCase):

    def run_tool(self, *args):
        r = subprocess.run([sys.executable, TOOL, '--mb', '2', '--rounds',
                            '2', *args], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def rows(self, out):
        return {m.group(1).strip(): m.group(2)
                for m in re.finditer(r'^  (\S.*?)\s{2,}(-?\d+|refused by '
                                     r'the kernel)$', out, re.M)}

    def test_each_kind_measured(self):
        with tempfile.NamedTemporaryFile() as f:
            f.write(os.urandom(1 << 21))
            f.flush()
            out = self.run_tool('--file', f.name, '--huge')
            self.assertIn(f'the file mapped: {f.name}', out)
        rows = self.rows(out)
        self.assertEqual(sorted(rows), sorted([
            'fresh anonymous page, written (fault)',
            'fresh anonymous page, populated, then written',
            'anonymous, transparent huge pages, written',
            'page-cache page, mapped and read']), out)
        # a page fault costs something anywhere
        self.assertGreater(int(rows['fresh anonymous page, written (fault)']),
                           0, out)

    def test_written_file_when_no_archive(self):
        out = self.run_tool('--written')
        self.assertIn('the file mapped: a file written for the purpose', out)
        self.assertEqual(len(self.rows(out)), 3, out)


if __name__ == '__main__':
    unittest.main()
