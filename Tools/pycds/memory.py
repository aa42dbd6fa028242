"""Memory shared and made private by processes that map one archive.

Usage (from the top of a built tree):

    ./python Tools/pycds/memory.py [--procs 8] [--python PATH] [--pip]
                                   [--fixed-python PATH]

1. Dense host: N concurrent processes import the standard-library workload
   (and, with --pip, the pip workload) and wait; while all are alive, sum
   Pss and Private_Dirty over all of them (/proc/PID/smaps_rollup), and for
   the archive mapping its Rss (pages touched), Shared_Clean and
   Private_Dirty (/proc/PID/smaps), with the archive off and on; with
   --fixed-python, also on with that interpreter: a build configured with
   --enable-cds-fixed-address, whose archive is used without relocation.
2. Pre-fork: a parent imports the workload, then forks N workers that call
   into the imported code (functions, methods, class creation, exceptions
   with tracebacks) for a few seconds and run gc.collect(); each worker
   reports how many bytes of the archive mapping it made private after the
   fork, with the archive off, off plus gc.freeze(), and on.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from test.test_cds import format as cdsformat
from test.test_cds.util import (STDLIB_IMPORTS, make_archive as trace_and_dump,
                                pip_site, share_args, timing_env)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKLOAD = STDLIB_IMPORTS

DENSE = WORKLOAD + '''
import sys
print("ready", flush=True)
sys.stdin.read()
'''

PREFORK = WORKLOAD + '''
import gc, os, sys, time, traceback
FREEZE = sys.argv[1] == "freeze"
ARCHIVE = sys.argv[2]
# the archive's regions and their file offsets: "str:OFFSET,tup:OFFSET,..."
REGIONS = [(name, int(offset)) for name, offset
           in (r.split(":") for r in sys.argv[5].split(","))]

def archive_private():
    """Private_Dirty + Private_Clean kB of the archive mapping (all mappings
    of the file), or of the whole process if no archive is mapped."""
    total = 0
    found = False
    with open("/proc/self/smaps") as f:
        current = False
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:
                current = len(parts) >= 6 and parts[5] == ARCHIVE
                found = found or current
            elif current and parts[0] in ("Private_Dirty:",):
                total += int(parts[1])
    return total

def exclusive_pages_by_region():
    """kB of archive pages this process maps exclusively (a private copy
    made after the fork), by region of the archive."""
    if not ARCHIVE_MAPPED:
        return {}
    base = None
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == ARCHIVE:
                lo = int(parts[0].split("-")[0], 16)
                base = lo - int(parts[2], 16) if base is None else base
    size = os.path.getsize(ARCHIVE)
    out = {"meta": 0, **{r: 0 for r, o in REGIONS}}
    with open("/proc/self/pagemap", "rb") as pm:
        pm.seek(base // 4096 * 8)
        raw = pm.read(size // 4096 * 8)
    for i in range(size // 4096):
        v = int.from_bytes(raw[8 * i:8 * i + 8], "little")
        if v >> 63 and (v >> 56) & 1 and not (v >> 61) & 1:
            off = i * 4096
            region = "meta"
            for r, o in REGIONS:
                if off >= o:
                    region = r
            out[region] += 4
    return out

def rollup(field):
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def work(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        json.loads(json.dumps({"a": [1, 2, {"b": None}]}))
        email.message.EmailMessage()["Subject"] = "x"
        argparse.ArgumentParser(prog="p").add_argument("--x")
        pathlib.PurePosixPath("/a/b/c").with_suffix(".txt")
        decimal.Decimal("1.1") + decimal.Decimal("2.2")
        ast.parse("x = 1 + 2")
        dataclasses.make_dataclass("C", ["a", "b"])
        try:
            json.loads("{bad")
        except ValueError:
            traceback.format_exc()
        n += 1
    gc.collect()
    return n

ARCHIVE_MAPPED = any(line.rstrip().endswith(ARCHIVE)
                     for line in open("/proc/self/maps"))
if FREEZE:
    gc.freeze()
pipes = []
for i in range(int(sys.argv[3])):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before_a, before_p = archive_private(), rollup("Private_Dirty")
        before_r = exclusive_pages_by_region()
        work(float(sys.argv[4]))
        after_a, after_p = archive_private(), rollup("Private_Dirty")
        after_r = exclusive_pages_by_region()
        regions = ",".join(f"{k}={after_r[k] - before_r.get(k, 0)}"
                           for k in after_r)
        os.write(w, f"{after_a - before_a} {after_p - before_p} {regions}\\n".encode())
        os._exit(0)
    os.close(w)
    pipes.append((pid, r))
results = []
for pid, r in pipes:
    data = b""
    while chunk := os.read(r, 100):
        data += chunk
    os.waitpid(pid, 0)
    a, p, *regions = data.split()
    results.append((int(a), int(p), regions[0].decode() if regions else ""))
print(" ".join(f"{a},{p},{r}" for a, p, r in results))
'''


def smaps_rollup(pid):
    out = {}
    with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(':') and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1])
    return out


def mapping_stats(pid, path):
    stats = {'Shared_Clean': 0, 'Private_Dirty': 0, 'Private_Clean': 0, 'Rss': 0}
    with open(f'/proc/{pid}/smaps') as f:
        current = False
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and '-' in parts[0] and ':' in parts[3]:
                current = len(parts) >= 6 and parts[5] == path
            elif current and parts and parts[0][:-1] in stats:
                stats[parts[0][:-1]] += int(parts[1])
    return stats


def dense(python, procs, archive, share, workdir, script='dense.py'):
    args = [python, '-X', 'frozen_modules=on']
    if share:
        args += share_args(archive)
    args += [os.path.join(workdir, script)]
    ps = [subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True, env=timing_env(), cwd=workdir)
          for _ in range(procs)]
    try:
        for p in ps:
            assert p.stdout.readline().strip() == 'ready'
        time.sleep(0.2)
        pss = priv = shared_clean = arch_priv = arch_rss = 0
        for p in ps:
            r = smaps_rollup(p.pid)
            pss += r.get('Pss', 0)
            priv += r.get('Private_Dirty', 0)
            m = mapping_stats(p.pid, archive)
            shared_clean += m['Shared_Clean']
            arch_priv += m['Private_Dirty']
            arch_rss += m['Rss']
    finally:
        for p in ps:
            p.stdin.close()
            p.wait()
    return pss, priv, shared_clean, arch_priv, arch_rss


def make_archive(python, workdir, script, tag):
    """Trace 'script' with 'python' and dump its archive; return the path."""
    lst = os.path.join(workdir, tag + '.lst')
    archive = os.path.join(workdir, tag + '.cds')
    trace_and_dump(lst, archive, [os.path.join(workdir, script)],
                   options=['-X', 'frozen_modules=on'], python=python,
                   env=timing_env(), cwd=workdir, input='', timeout=None)
    return archive


def regions(archive):
    """The archive's regions and their file offsets, as PREFORK takes them."""
    with open(archive, 'rb') as f:
        header = cdsformat.read_header(f.read(cdsformat.HEADER.size))
    return ','.join(f'{r}:{header[r + "_offset"]}' for r in cdsformat.REGIONS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--procs', type=int, default=8)
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--python', default=os.path.join(ROOT, 'python'))
    parser.add_argument('--fixed-python',
                        help='also measure this interpreter: a build configured '
                             'with --enable-cds-fixed-address')
    parser.add_argument('--pip', action='store_true',
                        help='add the pip workload (a venv with ensurepip)')
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix='cds-mem-')
    for name, text in (('dense.py', DENSE), ('prefork.py', PREFORK),
                       ('workload.py', WORKLOAD)):
        with open(os.path.join(workdir, name), 'w') as f:
            f.write(text)
    archive = make_archive(args.python, workdir, 'workload.py', 'w')
    common = [args.python, '-X', 'frozen_modules=on']
    size_kb = os.path.getsize(archive) // 1024
    workloads = [('stdlib', 'dense.py')]
    if args.pip:
        site = pip_site(args.python,
                        os.path.join(ROOT, 'build', 'cds-bench', 'venv'))
        with open(os.path.join(workdir, 'dense_pip.py'), 'w') as f:
            f.write(f'import sys; sys.path.insert(0, {site!r})\n'
                    'import pip._internal.cli.main, pip._internal.commands.install\n'
                    'print("ready", flush=True)\n'
                    'sys.stdin.read()\n')
        workloads.append(('pip', 'dense_pip.py'))
    variants = [('off', args.python, False), ('share (PIE)', args.python, True)]
    if args.fixed_python:
        variants.append(('share (fixed address)', args.fixed_python, True))

    print(f'Dense host: {args.procs} concurrent processes per workload; '
          f'totals over all of them, in kB')
    print()
    print('| workload | mode | total Pss | Pss vs off | total Private_Dirty '
          '| archive Rss (touched) | archive Shared_Clean | archive Private_Dirty '
          '| private / touched |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    for wname, script in workloads:
        off_pss = None
        for label, python, share in variants:
            arch = None
            if share:
                arch = make_archive(python, workdir, script,
                                    re.sub(r'\W+', '_', wname + label))
            pss, priv, sc, ap, rss = dense(python, args.procs, arch, share,
                                           workdir, script)
            if off_pss is None:
                off_pss = pss
            frac = f'{ap / rss:.0%}' if rss else '-'
            print(f'| {wname} | {label} | {pss} | {pss / off_pss:.2f} | {priv} '
                  f'| {rss if share else "-"} | {sc if share else "-"} '
                  f'| {ap if share else "-"} | {frac} |')

    print()
    print(f'Pre-fork: parent imports the workload, forks {args.procs} workers '
          f'that run it for {args.seconds} s and gc.collect()')
    print()
    print('| mode | archive bytes made private per worker (kB, median) '
          '| of which, by region (kB, one worker) '
          '| process Private_Dirty growth per worker (kB, median) |')
    print('|---|---:|---|---:|')
    runs = [('off', common, [], 'nofreeze', archive),
            ('off + gc.freeze()', common, [], 'freeze', archive),
            ('share (PIE)', common, share_args(archive), 'nofreeze', archive)]
    if args.fixed_python:
        fixed = make_archive(args.fixed_python, workdir, 'workload.py', 'wf')
        runs.append(('share (fixed address)',
                     [args.fixed_python, '-X', 'frozen_modules=on'],
                     share_args(fixed), 'nofreeze', fixed))
    for label, cmd, extra, freeze, arch in runs:
        r = subprocess.run(cmd + extra + [os.path.join(workdir, 'prefork.py'),
                                          freeze, arch, str(args.procs),
                                          str(args.seconds), regions(arch)],
                           capture_output=True, text=True, env=timing_env(),
                           cwd=workdir)
        if r.returncode:
            print(r.stderr)
            continue
        rows = [x.split(',', 2) for x in r.stdout.split()]
        arch = sorted(int(a) for a, p, g in rows)[len(rows) // 2]
        proc = sorted(int(p) for a, p, g in rows)[len(rows) // 2]
        by_region = rows[len(rows) // 2][2].replace(',', ' ') if extra else '-'
        print(f'| {label} | {arch if extra else "-"} | {by_region} | {proc} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
