"""Run CPython's regression tests with and without a code-object archive.

Usage (from the top of a built tree; see `make cds-regrtest`):

    ./python Tools/pycds/regrtest_compare.py [--tests "test_a test_b"]
        [--archive PATH] [--min-served N] [--protect] [-- regrtest options]

1. Runs `./python -m test` in share mode with the installation's default
   archive (as `python` runs with no option), or with --archive PATH also
   with an application archive of the entire standard library (Lib/test
   included) layered over it; every child process regrtest starts maps
   the same archives and appends its counters to a stats file
   (PYTHONCDSSTATS).  With --protect, the archives' never-written parts are
   mapped read-only in every process (PYTHONCDSPROTECT=1), so that any
   write to them stops the process with a diagnostic; such a diagnostic
   anywhere in the output fails the run.
2. Runs the same selection with the archive off (PYTHONCDS=off).
3. Fails when share mode has a test that fails, errors, crashes, times out or
   leaks and the plain run does not, or when the number of modules served
   from the archive is implausibly low.  Prints a summary table.

The last line of output is "N passed, N failed" (test files).
"""

import argparse
import os
import re
import subprocess
import sys
import time

from test.test_cds.util import clean_env, dump_args, write_stdlib_list

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.path.join(ROOT, 'python')
PROTECT_FAULT = 'write to the read-only part of archive'
# "0:00:01 load avg: 0.65 [ 4/13] test_inspect.test_inspect passed"
RESULT = re.compile(r'\[\s*\d+/\d+(?:/\d+)?\]\s+(\S+)\s+(.*)$')
TOTALS = re.compile(r'Total tests: (.*)')
FILES = re.compile(r'Total test files: run=(\d+)')


def dump(list_path, archive):
    r = subprocess.run([PYTHON, *dump_args(list_path, archive)],
                       env=clean_env(), capture_output=True, text=True)
    sys.stdout.write(r.stderr)
    if r.returncode != 0:
        sys.exit(f'regrtest_compare: dump failed ({r.returncode})')


def run_regrtest(tests, extra, env, log):
    cmd = [PYTHON, '-m', 'test', *extra, *tests]
    print(f'regrtest_compare: running {" ".join(cmd)}  (log: {log})', flush=True)
    t0 = time.monotonic()
    with open(log, 'w') as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                            cwd=ROOT).returncode
    elapsed = time.monotonic() - t0
    results = {}
    totals = {}
    summary = parse_summary(log)
    with open(log, errors='replace') as f:
        for line in f:
            m = RESULT.search(line)
            if m:
                name, status = m.groups()
                # the last word says it all: passed/failed/skipped/crashed...
                results[name] = status.strip()
            m = TOTALS.search(line)
            if m:
                totals.update((k, int(v.replace(',', '')))
                              for k, v in re.findall(r'(\w+)=([\d,]+)', m.group(1)))
            m = FILES.search(line)
            if m:
                totals['files_run'] = int(m.group(1))
    if summary is not None:
        # regrtest's own summary is the authority on what went wrong; the
        # per-test lines fill in the rest (and the names of what passed)
        bad, ran = summary
        totals['summary'] = 1
        for name in bad:
            results[name] = 'failed (per the summary)'
        for name in list(results):
            if is_bad(results[name]) and name not in bad:
                results[name] = 'passed (per the summary)'
    return rc, results, totals, elapsed


SUMMARY_BAD = re.compile(r'^(\d+) tests? (failed|altered the execution environment'
                         r'|crashed|timed out)')


def parse_summary(log):
    """The tests regrtest's final summary lists as failed, crashed or
    altering the environment; None if the run ended without a summary."""
    with open(log, errors='replace') as f:
        lines = f.read().splitlines()
    try:
        start = max(i for i, l in enumerate(lines) if l.startswith('== Tests result:'))
    except ValueError:
        return None
    bad = set()
    current = None
    for line in lines[start:]:
        m = SUMMARY_BAD.match(line)
        if m:
            current = bad
            continue
        if line.startswith('    ') and current is not None:
            current.update(line.split())
        elif not line.startswith('    '):
            current = None
    return bad, None


def is_bad(status):
    return not (status.startswith('passed') or status.startswith('skipped')
                or 'resource denied' in status or status.startswith('run no tests'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tests', default='',
                        help='space-separated test names (default: all)')
    parser.add_argument('--archive', default=None,
                        help='also dump every module of the standard '
                             'library, test packages included, into this '
                             'application archive, layered over the default '
                             'archive (default: the default archive alone)')
    parser.add_argument('--min-served', type=int, default=None,
                        help='fail unless at least this many modules were '
                             'served from the archive (default: 20 per test file)')
    parser.add_argument('--protect', action='store_true',
                        help='share mode with the archive write-protected '
                             '(PYTHONCDSPROTECT=1)')
    parser.add_argument('regrtest_args', nargs='*')
    args = parser.parse_args()
    tests = args.tests.split()
    extra = args.regrtest_args or ['-j2']

    work = os.path.join(ROOT, 'build', 'cds')
    os.makedirs(work, exist_ok=True)
    stats = os.path.join(work, 'regrtest.stats')
    share_env = clean_env(PYTHONCDSSTATS=stats)
    if args.archive:
        os.makedirs(os.path.dirname(os.path.abspath(args.archive)), exist_ok=True)
        list_path = os.path.splitext(args.archive)[0] + '.lst'
        n = write_stdlib_list(list_path, python=PYTHON)
        print(f'regrtest_compare: {n} source modules + frozen modules listed in {list_path}')
        dump(list_path, args.archive)
        share_env['PYTHONCDSARCHIVE'] = args.archive
    else:
        print('regrtest_compare: share mode with the default archive')

    if os.path.exists(stats):
        os.unlink(stats)
    if args.protect:
        share_env['PYTHONCDSPROTECT'] = '1'
    logdir = work
    rc_s, res_s, tot_s, t_s = run_regrtest(tests, extra, share_env,
                                           os.path.join(logdir, 'regrtest-share.log'))
    rc_o, res_o, tot_o, t_o = run_regrtest(tests, extra, clean_env(PYTHONCDS='off'),
                                           os.path.join(logdir, 'regrtest-off.log'))

    served = processes = active = protected = specs = 0
    if os.path.exists(stats):
        with open(stats) as f:
            for line in f:
                fields = dict(kv.split('=') for kv in line.split())
                processes += 1
                active += int(fields['active'])
                served += int(fields['served'])
                protected += int(fields.get('protected', 0))
                specs += int(fields.get('specs_found', 0))

    def row(label, tot, res, elapsed):
        bad = sum(1 for s in res.values() if is_bad(s))
        files = tot.get('files_run', len(res))
        return (f'| {label:<6} | {files:>6} | {tot.get("run", 0):>7} | '
                f'{tot.get("failures", 0) + tot.get("errors", 0):>6} | '
                f'{tot.get("skipped", 0):>7} | {bad:>10} | {elapsed:>6.0f} s |')

    print()
    print('| mode   | files  | tests   | failed | skipped | bad files  | time     |')
    print('|--------|--------|---------|--------|---------|------------|----------|')
    print(row('off', tot_o, res_o, t_o))
    print(row('share', tot_s, res_s, t_s))
    print()
    print(f'share mode: {processes} processes reported, {active} with the archive '
          f'mapped, {served} modules served from the archive ({specs} found '
          f'by the C search)'
          + (f', {protected} write-protected' if args.protect else ''))

    regressions = sorted(name for name, status in res_s.items()
                         if is_bad(status) and not is_bad(res_o.get(name, 'passed')))
    if tot_s.get('summary') and tot_o.get('summary'):
        # both runs completed: compare how many test files ran
        missing = ([] if tot_s.get('files_run') == tot_o.get('files_run')
                   else ['(%s test files ran in share mode, %s off)'
                         % (tot_s.get('files_run'), tot_o.get('files_run'))])
    else:
        missing = sorted(set(res_o) - set(res_s))
    for name in regressions:
        print(f'REGRESSION in share mode: {name}: {res_s[name]} '
              f'(off: {res_o.get(name, "not run")})')
    for name in missing:
        print(f'REGRESSION in share mode: {name}: no result (crash or hang?)')
    min_served = args.min_served
    if min_served is None:
        min_served = 20 * max(1, len(res_o))
    failed = len(regressions) + len(missing)
    if args.protect:
        with open(os.path.join(logdir, 'regrtest-share.log'),
                  errors='replace') as f:
            faults = [line.strip() for line in f if PROTECT_FAULT in line]
        for line in faults:
            print(f'FAULT in protect mode: {line}')
        failed += len(faults)
        if active and not protected:
            print('FAIL: no process had the archive write-protected')
            failed += 1
    if served < min_served:
        print(f'FAIL: only {served} modules served from the archive '
              f'(expected at least {min_served})')
        failed += 1
    if not res_s or not res_o:
        print('FAIL: a regrtest run produced no results')
        failed += 1
    passed = tot_s.get('files_run', len(res_s)) - len(regressions)
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
