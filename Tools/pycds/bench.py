"""Start-up and steady-state benchmark of code-object archives.

Usage (from the top of a built tree; `make cds-bench` runs it):

    ./python Tools/pycds/bench.py [--runs N] [--python PATH] [--callgrind]
                                  [--pip] [--third-party] [--only NAME ...]
                                  [--timer hyperfine|internal] [--no-stock]

For every workload it traces the program, dumps its archive, checks that
the program prints the same output with and without the archive, then times
whole processes of stock CPython 3.13.5 (built once, cached, from the same
pristine tarball with the same configure options: Tools/pycds/stock.py) and
of this interpreter with the archive off and on, and prints medians and the
ratios time(stock) / time(variant) (without stock: time(off) / time(variant)).  The timer is hyperfine
(Debian package "hyperfine") when installed: it runs in rounds of a few
runs of each variant, so that the variants are interleaved and drift in the
machine's load hits both; without it, or with --timer internal, a plain
loop alternates off, share, off, share.  With --callgrind it also counts
instructions with valgrind's callgrind (repeatable whatever the load).
It also reports the user + system time and the minor page faults of each
variant (getrusage() of the children): the kernel's share, which
instruction counts do not see.

It also reports, per workload, the archive's own start-up work as the
interpreter measures it (_cds.info(): open and validate + map, and prepare:
verify, relocate, intern), the archive size against the .pyc files it
replaces and the dump time; and three comparisons: TRACE against off (the
standard-library program), `python -c pass` served from an archive of the
whole standard library against one of only what it imports, and the dump
of the whole standard library.

The interpreter runs with -X frozen_modules=on, as an installed Python does
(a source-tree ./python has them off); --python measures another build, for
example one installed with `make install prefix=...`.
"""

import argparse
import glob
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from stock import stock_python
from test.test_cds.util import (NO_BASE, STDLIB_IMPORTS, dump_args, pip_site, pyc_size,
                                run_python, share_args, timing_env, trace_args,
                                write_stdlib_list)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIP_VENV = os.path.join(ROOT, 'build', 'cds-bench', 'venv')

STDLIB_APP = STDLIB_IMPORTS + '''\
print(len(dir(asyncio)), json.dumps([1, 2]), decimal.Decimal("1.5") * 2)
'''

STEADY = {
    'steady_json': '''
import json
data = [{"id": i, "name": "item%d" % i, "tags": ["a", "b", "c"], "v": i * 1.5}
        for i in range(2000)]
for _ in range(40):
    s = json.dumps(data)
    assert json.loads(s) == data
print(len(s))
''',
    'steady_re': '''
import re
text = "\\n".join("user%d@example.com said: value=%d at 12:%02d" % (i, i * 7, i % 60)
                 for i in range(3000))
pat = re.compile(r"(\\w+)@(\\w+)\\.com said: value=(\\d+) at (\\d+):(\\d+)")
n = 0
for _ in range(60):
    for m in pat.finditer(text):
        n += int(m.group(3))
    re.sub(r"\\d+", lambda m: str(len(m.group())), text[:20000])
print(n)
''',
    'steady_ast': '''
import ast, inspect, json, decimal
src = inspect.getsource(decimal) if not decimal.__file__.endswith(".so") else inspect.getsource(json)
src = inspect.getsource(ast)
n = 0
for _ in range(15):
    tree = ast.parse(src)
    n += sum(1 for _ in ast.walk(tree))
    compile(tree, "ast.py", "exec")
print(n)
''',
    'steady_email': '''
import email, email.policy
from email.message import EmailMessage
msgs = []
for i in range(300):
    m = EmailMessage()
    m["From"] = "a%d@example.com" % i
    m["To"] = "b@example.com"
    m["Subject"] = "Hello %d" % i
    m.set_content("body line\\n" * 50)
    msgs.append(m.as_bytes())
n = 0
for _ in range(4):
    for raw in msgs:
        p = email.message_from_bytes(raw, policy=email.policy.default)
        n += len(p.get_content())
print(n)
''',
    'steady_difflib': '''
import difflib
a = ["line %d %s\\n" % (i, "x" * (i % 17)) for i in range(3000)]
b = [l if i % 11 else l.upper() for i, l in enumerate(a)]
n = 0
for _ in range(3):
    n += len(list(difflib.unified_diff(a, b)))
    n += int(difflib.SequenceMatcher(None, a[:800], b[:800]).ratio() * 1000)
print(n)
''',
    'steady_decimal': '''
import _pydecimal as decimal
decimal.getcontext().prec = 50
x = decimal.Decimal(0)
for i in range(1, 40000):
    x += decimal.Decimal(1) / decimal.Decimal(i)
print(x)
''',
}


# Third-party workloads: pure-Python packages for Python 3.13 from Debian's
# current stable release (trixie), unpacked (not installed) into a cache.
DEBIAN_PACKAGES = ('python3-rich', 'python3-pygments', 'python3-docutils',
                   'python3-jinja2', 'python3-markupsafe', 'python3-requests',
                   'python3-urllib3', 'python3-idna', 'python3-certifi',
                   'python3-charset-normalizer', 'python3-markdown-it',
                   'python3-mdurl', 'python3-roman')
THIRD_PARTY = {
    'rich': 'import rich.console, rich.table, rich.progress, rich.markdown, rich.syntax',
    'pygments': 'import pygments.lexers.python, pygments.formatters.html, pygments.styles.default',
    'docutils': 'import docutils.core, docutils.parsers.rst, docutils.writers.html5_polyglot',
    'jinja2': 'import jinja2, jinja2.sandbox, jinja2.ext',
    'requests': 'import requests, requests.adapters, requests.sessions',
}


def debian_mirror():
    """The first Debian mirror (not the security archive) that this
    machine's apt sources name: deb822 *.sources files (a "URIs:" field
    may name several) and one-line *.list files ("deb [options] URI ...")."""
    uris = []
    for path in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
        with open(path, errors='replace') as f:
            for line in f:
                key, sep, value = line.partition(':')
                if sep and key.strip().lower() == 'uris':
                    uris += value.split()
    for path in ['/etc/apt/sources.list',
                 *sorted(glob.glob('/etc/apt/sources.list.d/*.list'))]:
        if not os.path.exists(path):
            continue
        with open(path, errors='replace') as f:
            for line in f:
                words = re.sub(r'\[[^]]*\]', ' ', line.split('#')[0]).split()
                if len(words) > 1 and words[0] in ('deb', 'deb-src'):
                    uris.append(words[1])
    for uri in uris:
        if '://' in uri and 'security' not in uri:
            return uri.rstrip('/')
    raise RuntimeError('no Debian mirror in the apt sources (/etc/apt)')


def third_party_site():
    """Unpack the Debian packages once; return their dist-packages dir."""
    cache = os.path.join(os.environ.get('XDG_CACHE_HOME',
                                        os.path.expanduser('~/.cache')),
                         'pycds', 'bench-trixie')
    site = os.path.join(cache, 'root', 'usr', 'lib', 'python3', 'dist-packages')
    if os.path.isdir(os.path.join(site, 'rich')):
        return site
    apt = os.path.join(cache, 'apt')
    for d in ('etc/sources.list.d', 'etc/preferences.d', 'lists/partial',
              'cache/archives/partial', 'debs'):
        os.makedirs(os.path.join(apt, d), exist_ok=True)
    with open(os.path.join(apt, 'etc', 'sources.list'), 'w') as f:
        f.write('deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] '
                f'{debian_mirror()} trixie main\n')
    open(os.path.join(apt, 'status'), 'w').close()
    opts = []
    for key, sub in (('Dir::Etc::SourceList', 'etc/sources.list'),
                     ('Dir::Etc::SourceParts', 'etc/sources.list.d'),
                     ('Dir::State::Lists', 'lists'), ('Dir::Cache', 'cache'),
                     ('Dir::State::status', 'status'),
                     ('Dir::Etc::Preferences', 'etc/preferences'),
                     ('Dir::Etc::PreferencesParts', 'etc/preferences.d')):
        opts += ['-o', f'{key}={os.path.join(apt, sub)}']
    subprocess.run(['apt-get', *opts, 'update'], check=True,
                   stdout=subprocess.DEVNULL)
    # (apt-get update exits 0 even when it fetched nothing)
    if not glob.glob(os.path.join(apt, 'lists', '*Packages*')):
        raise RuntimeError('cannot fetch the package index of Debian trixie '
                           f'from {debian_mirror()} (no network?)')
    subprocess.run(['apt-get', *opts, 'download', *DEBIAN_PACKAGES], check=True,
                   cwd=os.path.join(apt, 'debs'), stdout=subprocess.DEVNULL)
    for deb in os.listdir(os.path.join(apt, 'debs')):
        subprocess.run(['dpkg', '-x', os.path.join(apt, 'debs', deb),
                        os.path.join(cache, 'root')], check=True)
    return site


class Workload:
    def __init__(self, name, args, files=None):
        self.name = name
        self.args = args
        self.files = files or {}


def workloads(workdir, third_party=False, pip=False, python=None):
    w = [Workload('python -c pass', ['-c', 'pass']),
         Workload('python -S -c pass', ['-S', '-c', 'pass']),
         Workload('stdlib program', ['stdlib_app.py'], {'stdlib_app.py': STDLIB_APP})]
    if pip:
        site = pip_site(python, PIP_VENV)
        prog = (f'import sys; sys.path.insert(0, {site!r})\n'
                'import pip._internal.cli.main, pip._internal.commands.install\n'
                'print("ok")\n')
        w.append(Workload('pip', ['pip_import.py'], {'pip_import.py': prog}))
    if third_party:
        site = third_party_site()
        for name, code in THIRD_PARTY.items():
            prog = f'import sys; sys.path.insert(0, {site!r})\n{code}\nprint("ok")\n'
            w.append(Workload(f'3rd-party: {name}', [f'tp_{name}.py'],
                              {f'tp_{name}.py': prog}))
    for name, code in STEADY.items():
        w.append(Workload(name, [name + '.py'], {name + '.py': code}))
    return w


def run(python, args, cwd):
    # as given: the default archive is used unless the arguments say not
    return run_python(*args, python=python, cwd=cwd, env=timing_env(),
                      timeout=None, default_archive=True)


def hyperfine_times(variants, cwd, runs):
    """Wall times (s) of each command (a list) in 'variants', from hyperfine
    rounds of up to 5 runs each, so that the variants interleave."""
    times = [[] for _ in variants]
    done = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'h.json')
        while done < runs:
            k = min(5, runs - done)
            cmds = [' '.join(a) for a in variants]
            subprocess.run(['hyperfine', '-N', '--style', 'none', '--runs', str(k),
                            '--warmup', '1', '--export-json', out, *cmds],
                           cwd=cwd, env=timing_env(), check=True,
                           stdout=subprocess.DEVNULL)
            with open(out) as f:
                for i, res in enumerate(json.load(f)['results']):
                    times[i].extend(res['times'])
            done += k
    return times


def measure(variants, cwd, runs, timer):
    """Wall times (s) of each command (a list: interpreter and arguments)."""
    if timer == 'hyperfine' and not any(' ' in x for a in variants for x in a):
        return hyperfine_times(variants, cwd, runs)
    for a in variants:
        timed(a, cwd)       # warm-up
    times = [[] for _ in variants]
    for _ in range(runs):
        for i, a in enumerate(variants):
            times[i].append(timed(a, cwd))
    return times


def archive_costs(python, shared_args, cwd):
    """The archive's own work in one process, as _cds.info() reports it."""
    code = 'import _cds, json; print(json.dumps(_cds.info()))'
    args = [a for a in shared_args if not a.endswith('.py')]
    prog = [a for a in shared_args if a.endswith('.py')]
    # run the workload, then report: exec the program file in __main__
    if prog:
        code = (f'exec(compile(open({prog[0]!r}).read(), {prog[0]!r}, "exec"))\n'
                + code)
    r = run(python, [a for a in args if a not in ('-c', 'pass')] + ['-c', code], cwd)
    try:
        info = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return info


def timed(command, cwd):
    env = timing_env()
    t0 = time.perf_counter()
    r = subprocess.run(command, cwd=cwd, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f'{command} exited with {r.returncode}')
    return t


def cpu_and_faults(variants, cwd, runs):
    """Median user + system time (s) and minor page faults of each command,
    from getrusage() of the children, the variants alternating: what the
    kernel does for a process (system calls, page faults) shows here and
    not in instruction counts."""
    env = timing_env()
    rows = [[] for _ in variants]
    for _ in range(runs):
        for i, a in enumerate(variants):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(a, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            rows[i].append((after.ru_utime - before.ru_utime
                            + after.ru_stime - before.ru_stime,
                            after.ru_minflt - before.ru_minflt))
    return [(statistics.median(t for t, _ in r),
             statistics.median(f for _, f in r)) for r in rows]


def callgrind(command, cwd):
    r = subprocess.run(['valgrind', '--tool=callgrind',
                        '--callgrind-out-file=/dev/null', *command],
                       cwd=cwd, env=timing_env(), capture_output=True, text=True)
    m = re.search(r'Collected : (\d+)', r.stderr)
    return int(m.group(1)) if m else None


def extra_comparisons(python, workdir, common, runs, timer):
    """TRACE overhead, archive-size independence, whole-stdlib dump."""
    lines = ['']
    app = os.path.join(workdir, 'stdlib_app.py')
    with open(app, 'w') as f:
        f.write(STDLIB_APP)
    lst = os.path.join(workdir, 'trace-bench.lst')
    off_args = common + ['-X', 'cds=off', 'stdlib_app.py']
    traced_args = common + trace_args(lst) + ['stdlib_app.py']
    off, trace = measure([[python, *off_args], [python, *traced_args]],
                         workdir, runs, timer)
    t_off, t_trace = statistics.median(off), statistics.median(trace)
    lines.append(f'TRACE overhead (stdlib program): off {t_off * 1000:.1f} ms, '
                 f'trace {t_trace * 1000:.1f} ms: {(t_trace / t_off - 1) * 100:+.1f}% '
                 f'(target <= 5%)')

    # python -c pass from an archive of only what it imports vs the whole
    # standard library
    small_lst = os.path.join(workdir, 'pass.lst')
    small = os.path.join(workdir, 'pass.cds')
    whole_lst = os.path.join(workdir, 'whole.lst')
    whole = os.path.join(workdir, 'whole.cds')
    run(python, common + trace_args(small_lst) + ['-c', 'pass'], workdir)
    run(python, common + list(NO_BASE) + dump_args(small_lst, small), workdir)
    n = write_stdlib_list(whole_lst, python=python)
    t0 = time.perf_counter()
    r = run(python, common + list(NO_BASE) + dump_args(whole_lst, whole),
            workdir)
    dump_s = time.perf_counter() - t0
    lines.append(f'DUMP of the whole standard library: {n} listed modules, '
                 f'{os.path.getsize(whole) / 1e6:.0f} MB, {dump_s:.1f} s '
                 f'({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""})')
    pass_small = common + list(NO_BASE) + share_args(small) + ['-c', 'pass']
    pass_whole = common + list(NO_BASE) + share_args(whole) + ['-c', 'pass']
    pass_default = common + ['-c', 'pass']
    pass_off = common + ['-X', 'cds=off', '-c', 'pass']
    variants = [[python, *v] for v in (pass_off, pass_small, pass_whole,
                                       pass_default)]
    o, s, w, d = (statistics.median(t) for t in
                  measure(variants, workdir, runs, timer))
    lines.append(f'python -c pass: off {o * 1000:.2f} ms, archive of what it imports '
                 f'({os.path.getsize(small) / 1e6:.1f} MB) {s * 1000:.2f} ms, '
                 f'whole-stdlib archive ({os.path.getsize(whole) / 1e6:.0f} MB) '
                 f'{w * 1000:.2f} ms, default archive {d * 1000:.2f} ms: '
                 f'default/small {d / s:.3f} (target <= 1.02)')
    if shutil.which('valgrind'):
        io, is_, iw, id_ = (callgrind(v, workdir) for v in variants)
        if io and is_ and id_:
            lines.append(f'python -c pass, instructions: off {io / 1e6:.1f}M, '
                         f'archive of what it imports {is_ / 1e6:.1f}M, default '
                         f'archive {id_ / 1e6:.1f}M: default/small '
                         f'{id_ / is_:.3f} (target <= 1.02)')
    # the default archive against the .pyc files of the modules it holds
    r = run(python, ['-c', _DEFAULT_SIZES], workdir)
    if r.returncode == 0:
        lines.append(r.stdout.strip())
    return lines


# Run by the measured interpreter: its default archive and .pyc sizes
_DEFAULT_SIZES = """if 1:
    import importlib.util, os, sys
    from cds import _stdlib
    path = _stdlib.default_archive(sys._stdlib_dir)
    pyc = 0
    for name, source in _stdlib.modules(sys._stdlib_dir):
        try:
            pyc += os.path.getsize(importlib.util.cache_from_source(source))
        except OSError:
            pass
    size = os.path.getsize(path) if os.path.exists(path) else 0
    print(f'default archive: {size / 1e6:.1f} MB for {pyc / 1e6:.1f} MB of '
          f'.pyc files of the modules it holds: {size / max(pyc, 1):.2f}x '
          f'(target <= 1.5x)')
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--python', default=os.path.join(ROOT, 'python'))
    parser.add_argument('--callgrind', action='store_true')
    parser.add_argument('--only', nargs='*')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--pip', action='store_true',
                        help='add the pip workload (a venv with ensurepip)')
    parser.add_argument('--third-party', action='store_true',
                        help='add workloads importing pure-Python packages '
                             "from Debian trixie (downloaded once into ~/.cache/pycds)")
    parser.add_argument('--timer', choices=('hyperfine', 'internal'),
                        default='hyperfine' if shutil.which('hyperfine') else 'internal')
    parser.add_argument('--no-extra', action='store_true',
                        help='skip the TRACE and whole-stdlib comparisons')
    parser.add_argument('--no-stock', action='store_true',
                        help='do not build and measure stock CPython 3.13.5')
    args = parser.parse_args()
    stock = None if args.no_stock else stock_python(args.python)

    workdir = tempfile.mkdtemp(prefix='cds-bench-')
    common = ['-X', 'frozen_modules=on']
    rows = []
    try:
        for wl in workloads(workdir, args.third_party, args.pip, args.python):
            if args.only and not any(o in wl.name for o in args.only):
                continue
            for fname, text in wl.files.items():
                with open(os.path.join(workdir, fname), 'w') as f:
                    f.write(text)
            tag = re.sub(r'\W+', '_', wl.name)
            lst = os.path.join(workdir, tag + '.lst')
            alone = os.path.join(workdir, tag + '.cds')
            layered = os.path.join(workdir, tag + '-app.cds')
            variants = {
                'stock': common + wl.args,
                'off': common + ['-X', 'cds=off'] + wl.args,
                # what plain python does: the installation's default archive
                'default': common + wl.args,
                # an application archive over it, dumped with it present
                'default+app': common + share_args(layered) + wl.args,
                # the application's own archive of everything it imports
                'app alone': common + list(NO_BASE) + share_args(alone) + wl.args,
            }
            r = run(args.python, common + trace_args(lst) + wl.args, workdir)
            if r.returncode:
                raise RuntimeError(r.stderr)
            t0 = time.perf_counter()
            r = run(args.python, common + list(NO_BASE) + dump_args(lst, alone), workdir)
            dump_time = time.perf_counter() - t0
            if r.returncode:
                raise RuntimeError(r.stderr)
            r = run(args.python, common + dump_args(lst, layered), workdir)
            if r.returncode:
                raise RuntimeError(r.stderr)
            if stock is None:
                del variants['stock']
            # each variant as a command: the interpreter, then its arguments
            commands = {k: [stock if k == 'stock' else args.python, *v]
                        for k, v in variants.items()}
            outs = {k: run(c[0], c[1:], workdir) for k, c in commands.items()}
            same = all(o.stdout == outs['off'].stdout and o.returncode == 0
                       for o in outs.values())
            runs = args.runs if not wl.name.startswith('steady') else max(5, args.runs // 6)
            times = measure(list(commands.values()), workdir, runs, args.timer)
            ms = {k: statistics.median(t) * 1000 for k, t in zip(variants, times)}
            cpu = cpu_and_faults(list(commands.values()), workdir,
                                 max(5, runs // 2))
            info = archive_costs(args.python, variants['default+app'], workdir) or {}
            row = {
                'workload': wl.name,
                'ms': ms,
                'off_ms': ms['off'],
                'share_ms': ms['default+app'],
                'ratio': ms['off'] / ms['default+app'],
                'stock_ratio': (ms['stock'] / ms['default+app']
                                if 'stock' in ms else None),
                'same_output': same,
                'cpu_ms': {k: c[0] * 1000 for k, c in zip(variants, cpu)},
                'faults': {k: c[1] for k, c in zip(variants, cpu)},
                'archive_bytes': os.path.getsize(alone),
                'app_bytes': os.path.getsize(layered),
                'pyc_bytes': pyc_size(lst),
                'dump_s': dump_time,
                'open_ms': info.get('open_seconds', 0) * 1000,
                'prepare_ms': info.get('prepare_seconds', 0) * 1000,
                'served': info.get('served', 0),
            }
            if args.callgrind and shutil.which('valgrind'):
                row['instr'] = {k: callgrind(c, workdir)
                                for k, c in commands.items()}
            rows.append(row)
            print(f"{wl.name}: " + ', '.join(f'{k} {v:.1f} ms'
                                             for k, v in ms.items()),
                  file=sys.stderr, flush=True)
        extra = [] if (args.no_extra or args.only) else \
            extra_comparisons(args.python, workdir, common, args.runs, args.timer)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f'runs: {args.runs} (steady-state: fewer), median wall time, timer: '
          f'{args.timer}; interpreter: {args.python} -X frozen_modules=on')
    print()
    # ratios against stock CPython when it was measured, else against off
    base = 'stock' if stock else 'off'
    names = (('off',) if stock else ()) + ('default', 'default+app',
                                           'app alone')
    print(f'Wall time (median ms) and {base}/variant; "off" is -X cds=off, '
          '"default" plain python (the installation\'s default archive), '
          '"default+app" an application archive over it, "app alone" an '
          'archive of everything the program imports with no default '
          'archive (-X cds_base=none):')
    if stock:
        print(f'(stock: {stock}, CPython 3.13.5 built with the same options)')
    print()
    print(f'| workload | {base} | ' + ' | '.join(names) + ' | same output | '
          'served | open + prepare (ms) | app archive: alone / over default '
          '| .pyc | dump |')
    print('|---|---:|' + '---:|' * len(names) + '---|---:|---:|---:|---:|---:|')
    for r in rows:
        ms = r['ms']
        cells = ' | '.join(f"{ms[n]:.1f} ({ms[base] / ms[n]:.2f}x)"
                           for n in names)
        print(f"| {r['workload']} | {ms[base]:.1f} | {cells} | "
              f"{'yes' if r['same_output'] else 'NO'} | {r['served']} | "
              f"{r['open_ms']:.2f} + {r['prepare_ms']:.2f} | "
              f"{r['archive_bytes'] / 1e6:.1f} / {r['app_bytes'] / 1e6:.2f} MB | "
              f"{r['pyc_bytes'] / 1e6:.1f} MB | {r['dump_s']:.2f} s |")
    print()
    print(f'CPU time (user + system, median ms) and minor page faults, '
          f'{base}/variant of the time (getrusage() of the children, the '
          'variants alternating; half the runs):')
    print()
    print(f'| workload | {base} | ' + ' | '.join(names) + ' |')
    print('|---|---:|' + '---:|' * len(names))
    for r in rows:
        c, f = r['cpu_ms'], r['faults']
        cells = ' | '.join(f"{c[n]:.1f} ({c[base] / c[n]:.2f}x), {f[n]:.0f}"
                           for n in names)
        print(f"| {r['workload']} | {c[base]:.1f}, {f[base]:.0f} | {cells} |")
    if args.callgrind:
        print()
        print(f'Instructions (callgrind, millions) and {base}/variant:')
        print()
        print(f'| workload | {base} | ' + ' | '.join(names) + ' |')
        print('|---|---:|' + '---:|' * len(names))
        for r in rows:
            i = r.get('instr', {})
            if not all(i.get(k) for k in (base,) + names):
                continue
            cells = ' | '.join(f"{i[n] / 1e6:.1f} ({i[base] / i[n]:.3f}x)"
                               for n in names)
            print(f"| {r['workload']} | {i[base] / 1e6:.1f} | {cells} |")
    third = [r for r in rows if r['workload'].startswith('3rd-party')]
    if third:
        print(f'\nthird-party geometric mean, wall time, off/share: '
              f"{statistics.geometric_mean([r['ratio'] for r in third]):.2f}"
              + (f", stock/share: {statistics.geometric_mean([r['stock_ratio'] for r in third]):.2f}"
                 if stock else ''))
    counted = [r for r in third if all(r.get('instr', {}).get(k)
                                       for k in (base, 'default+app'))]
    if counted:
        print(f'third-party geometric mean, instructions, {base}/default+app: '
              + f"{statistics.geometric_mean([r['instr'][base] / r['instr']['default+app'] for r in counted]):.3f}")
    for line in extra:
        print(line)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r['same_output'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
