"""A brief run of the pycds fuzzer (Tools/pycds/fuzz/): mutated archives
and module lists must not crash the interpreter.

Twenty seconds of cases with a fixed seed, against the interpreter under
test: mutated headers, index entries, string tables, relocation and fixup
records, objects (with their checksums redone, as a forger would) and
module lists.  A signal, a hang, a fatal error or a traceback from the
archive code fails the test, which shows the fuzzer's summary: each
crash's mutation, and the command that reruns it (in the fuzzer's own
work directory: rerun the fuzzer with the same seed to keep the inputs).
Longer runs:

    ./python Tools/pycds/fuzz --seconds 600 --jobs 4
"""

import os
import re
import subprocess
import sys
import unittest

from test import support
from test.test_cds.util import clean_env, run_python, temp_dir, write_list

# Lib/test/test_cds/ -> the source tree root.
SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
# the package directory, run through its __main__.py
FUZZ = os.path.join(SRC_ROOT, 'Tools', 'pycds', 'fuzz')

SECONDS = 20
SEED = 1


@support.requires_subprocess()
@unittest.skipUnless(os.path.isfile(os.path.join(FUZZ, '__main__.py')),
                     'not a pycds source tree (no Tools/pycds/fuzz/)')
class FuzzTests(unittest.TestCase):

    def setUp(self):
        self.tmp = temp_dir(self.addCleanup)
        # a build that cannot archive has nothing to fuzz
        lst = os.path.join(self.tmp, 'empty.lst')
        write_list(lst, [])
        r = run_python('-X', 'cds=dump', '-X', f'cds_list={lst}',
                       '-X', f'cds_archive={os.path.join(self.tmp, "a.arc")}')
        if r.returncode != 0 and 'not supported' in r.stderr:
            self.skipTest('this build cannot archive code objects')

    def test_brief_run_finds_no_crash(self):
        r = subprocess.run(
            [sys.executable, FUZZ, '--seconds', str(SECONDS),
             '--seed', str(SEED), '--workdir', self.tmp],
            capture_output=True, text=True, errors='replace',
            env=clean_env(), timeout=support.LONG_TIMEOUT)
        report = f'\n{r.stdout}\n{r.stderr[-5000:]}'
        self.assertNotEqual(r.returncode, 2, report)     # set-up failed
        crashes = re.search(r'(?m)^crashes: (\d+)', r.stdout)
        self.assertIsNotNone(crashes, report)
        self.assertEqual(int(crashes.group(1)), 0, report)
        self.assertEqual(r.returncode, 0, report)
        # it ran every target, and none of its mutators failed
        header = re.search(r'(?m)^target +(.*)$', r.stdout)
        self.assertIsNotNone(header, report)
        counts = {}
        for line in r.stdout.splitlines():
            name, *numbers = line.split() or ['']
            if len(numbers) > 1 and all(n.isdigit() for n in numbers):
                counts[name] = dict(zip(header.group(1).split(),
                                        map(int, numbers)))
        for target in ('header', 'index', 'strtab', 'records', 'objects',
                       'list'):
            self.assertGreater(counts.get(target, {}).get('runs', 0), 0,
                               report)
        self.assertGreater(counts['total']['runs'], 20, report)
        self.assertEqual(counts['total']['skipped'], 0, report)


if __name__ == '__main__':
    unittest.main()
