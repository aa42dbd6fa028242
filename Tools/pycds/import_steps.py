"""Where the import time of a program goes, with and without the archive.

Usage (from the top of a built tree):

    ./python Tools/pycds/import_steps.py [--python PATH] [--runs N]

Runs the standard-library program of bench.py (its imports) with wrappers around the
steps of the import system -- importlib._bootstrap._find_spec (finding a
module), module_from_spec (creating the module object, which loads extension
modules) and SourceLoader.get_code (reading the .pyc, or the archive's
checks and fixups in share mode) -- and prints the time of each step and of
the whole import, off and in share mode (medians).  What is left besides
them is running the module bodies and the rest of _find_and_load.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

from test.test_cds.util import (STDLIB_IMPORTS, make_archive, run_checked,
                                share_args, timing_env)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = '''\
import time, json as _json
import importlib._bootstrap as _b, importlib._bootstrap_external as _be
_steps = {"find_spec": 0.0, "module_from_spec": 0.0, "get_code": 0.0}
def _wrap(owner, name, key):
    orig = getattr(owner, name)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            _steps[key] += time.perf_counter() - t
    setattr(owner, name, wrapper)
_wrap(_b, "_find_spec", "find_spec")
_wrap(_b, "module_from_spec", "module_from_spec")
_wrap(_be.SourceLoader, "get_code", "get_code")
_t0 = time.perf_counter()
'''
REPORT = '''
_steps["imports"] = time.perf_counter() - _t0
print(_json.dumps(_steps))
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--python', default=os.path.join(ROOT, 'python'))
    parser.add_argument('--runs', type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'steps.py')
        with open(path, 'w') as f:
            f.write(PROBE + STDLIB_IMPORTS + REPORT)
        lst, archive = os.path.join(tmp, 'a.lst'), os.path.join(tmp, 'a.cds')
        common = ['-X', 'frozen_modules=on']
        make_archive(lst, archive, [path], options=common, python=args.python,
                     env=timing_env(), timeout=None)
        modes = {'off': [], 'share': share_args(archive)}
        results = {m: [] for m in modes}
        for _ in range(args.runs):
            for mode, extra in modes.items():
                r = run_checked(*common, *extra, path, python=args.python,
                                env=timing_env(), timeout=None)
                results[mode].append(json.loads(r.stdout.splitlines()[-1]))
    print('| mode | imports (ms) | find_spec | module_from_spec | get_code | the rest |')
    print('|---|---:|---:|---:|---:|---:|')
    for mode, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) * 1000 for k in runs[0]}
        rest = med['imports'] - med['find_spec'] - med['module_from_spec'] - med['get_code']
        print(f"| {mode} | {med['imports']:.1f} | {med['find_spec']:.1f} | "
              f"{med['module_from_spec']:.1f} | {med['get_code']:.1f} | {rest:.1f} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
