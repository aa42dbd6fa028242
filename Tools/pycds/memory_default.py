"""Memory of processes using the installation's default archive.

Usage (from the top of a built tree):

    ./python Tools/pycds/memory_default.py [--python PATH] [--procs 8]

Starts N concurrent processes of the standard-library program, then N/2
of it and N/2 of a second program that imports other standard-library
modules, each waiting once its imports are done; while all are alive, sums
their Pss (/proc/PID/smaps_rollup).  Each mix runs with the archive off
(-X cds=off), with the default archive as plain python uses it, and with
-X cds_in_place (relocated in place, where a PIE build copies); the
smallest total of three runs is reported, with its ratio to off.  Run it
with a build configured with --enable-cds-fixed-address (--python) to see
the default archive shared in place.
"""

import argparse
import os
import subprocess
import sys
import time

from test.test_cds.util import STDLIB_IMPORTS, clean_env

SECOND = ('import email.message, email.parser, http.server, json, logging, '
          'argparse, csv, sqlite3, xml.dom.minidom, zipfile, tarfile, '
          'pathlib\n')
WAIT = "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"


def total_pss(python, args, programs):
    procs = [subprocess.Popen([python, *args, '-c', prog + WAIT],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=clean_env(), text=True)
             for prog in programs]
    try:
        for p in procs:
            while p.stdout.readline().strip() != 'ready':
                if p.poll() is not None:
                    raise RuntimeError(f'{args}: exited with {p.returncode}')
        time.sleep(0.3)
        total = 0
        for p in procs:
            with open(f'/proc/{p.pid}/smaps_rollup') as f:
                total += sum(int(line.split()[1]) for line in f
                             if line.startswith('Pss:'))
        return total
    finally:
        for p in procs:
            p.stdin.close()
            p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--python', default=sys.executable)
    parser.add_argument('--procs', type=int, default=8)
    args = parser.parse_args()
    n = args.procs
    mixes = {'stdlib program': [STDLIB_IMPORTS] * n,
             'two programs': [STDLIB_IMPORTS] * (n // 2)
                             + [SECOND] * (n - n // 2)}
    modes = {'off': ['-X', 'cds=off'], 'default archive': [],
             'in place': ['-X', 'cds_in_place']}
    print(f'{args.python}, {n} processes; total Pss in kB, ratio to off')
    print()
    print('| mix | ' + ' | '.join(modes) + ' |')
    print('|---|' + '---:|' * len(modes))
    for mix, programs in mixes.items():
        kb = {m: min(total_pss(args.python, a, programs) for _ in range(3))
              for m, a in modes.items()}
        print(f'| {mix} | ' + ' | '.join(
            f"{kb[m]} ({kb[m] / kb['off']:.3f})" for m in modes) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
