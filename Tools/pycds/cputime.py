"""CPU time and page faults of start-up: stock CPython against this
interpreter with the archive off, copied (the default under PIE) and in
place.

Usage (from the top of a built tree):

    ./python Tools/pycds/cputime.py [--runs N] [--no-stock] [ARGS...]

Runs 'python -X frozen_modules=on ARGS' (default: -c pass) for each
variant in turn, N rounds (default 40), and prints the medians of user and
system time and of minor page faults, from getrusage() of the children.
What callgrind's instruction counts do not see (system calls, page faults,
the kernel's work on mappings) shows here; the times depend on the load of
the machine, the fault counts do not.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys

from stock import stock_python

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=40)
    parser.add_argument('--python', default=os.path.join(ROOT, 'python'))
    parser.add_argument('--no-stock', action='store_true')
    parser.add_argument('args', nargs='*', default=['-c', 'pass'])
    args = parser.parse_args()
    variants = {}
    if not args.no_stock:
        variants['stock'] = [stock_python(args.python)]
    variants.update({
        'off': [args.python, '-X', 'cds=off'],
        'default': [args.python],
        'in place': [args.python, '-X', 'cds_in_place'],
    })
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('PYTHONCDS', 'PYCDS'))}
    results = {k: [] for k in variants}
    for _ in range(args.runs):
        for name, command in variants.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([*command, '-X', 'frozen_modules=on', *args.args],
                           stdout=subprocess.DEVNULL, env=env, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            results[name].append((after.ru_utime - before.ru_utime,
                                  after.ru_stime - before.ru_stime,
                                  after.ru_minflt - before.ru_minflt))
    print(f'python -X frozen_modules=on {" ".join(args.args)}: medians of '
          f'{args.runs} alternating runs')
    print('| variant | user ms | system ms | user + system ms | minor faults |')
    print('|---|---:|---:|---:|---:|')
    for name, rows in results.items():
        user = statistics.median(r[0] for r in rows) * 1000
        system = statistics.median(r[1] for r in rows) * 1000
        total = statistics.median(r[0] + r[1] for r in rows) * 1000
        faults = statistics.median(r[2] for r in rows)
        print(f'| {name} | {user:.1f} | {system:.1f} | {total:.1f} | '
              f'{faults:.0f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
