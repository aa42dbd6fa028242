"""Stock CPython 3.13.5, built once for comparison (bench.py, memory.py).

Usage (from the top of a built tree):

    ./python Tools/pycds/stock.py [--python PATH]   # prints its interpreter

Builds the pristine upstream tarball that ./bootstrap uses (the same file,
sha256-checked by bootstrap's own code) with no patch, configured with the
options of the interpreter to compare (its sysconfig CONFIG_ARGS, without
pycds's own --enable-cds-* options), in

    ${XDG_CACHE_HOME:-~/.cache}/pycds/stock-3.13.5-<options hash>/

and reuses that build afterwards, with the standard library's .pyc files
compiled as an installed Python has them.  The interpreter is the build
tree's ./python, run in place, as ours is.
"""

import argparse
import hashlib
import importlib.machinery
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bootstrap():
    """The ./bootstrap script as a module (its tarball code)."""
    path = os.path.join(ROOT, 'bootstrap')
    loader = importlib.machinery.SourceFileLoader('pycds_bootstrap', path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def configure_args(python):
    """The configure options of 'python', without pycds's own."""
    r = subprocess.run([python, '-c', 'import sysconfig; '
                        'print(sysconfig.get_config_var("CONFIG_ARGS") or "")'],
                       capture_output=True, text=True, check=True)
    return [a for a in shlex.split(r.stdout.strip())
            if not a.startswith(('--enable-cds', '--disable-cds'))]


def stock_python(python, log=sys.stderr):
    """The stock interpreter built like 'python' (building it if needed)."""
    args = configure_args(python)
    boot = _bootstrap()
    key = hashlib.sha256('\0'.join([boot.SHA256] + args).encode()).hexdigest()
    cache = os.path.join(os.environ.get('XDG_CACHE_HOME')
                         or os.path.expanduser('~/.cache'), 'pycds')
    build = os.path.join(cache, f'stock-3.13.5-{key[:12]}')
    exe = os.path.join(build, 'python')
    if os.path.exists(os.path.join(build, '.built')):
        return exe
    print(f'stock: building CPython 3.13.5 ({" ".join(args) or "no options"}) '
          f'in {build} (once)', file=log, flush=True)
    shutil.rmtree(build, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = boot.obtain_tarball(tmp, boot.SHA256)
        boot.extract(tarball, build)
    out = os.path.join(build, 'stock-build.log')
    with open(out, 'w') as f:
        # the .pyc files, as an installed stock Python has them
        for cmd in (['./configure', *args], ['make', f'-j{os.cpu_count()}'],
                    ['./python', '-E', '-m', 'compileall', '-q', '-j0',
                     '-x', 'bad_coding|badsyntax|lib2to3/tests/data',
                     'Lib']):
            if subprocess.run(cmd, cwd=build, stdout=f,
                              stderr=subprocess.STDOUT).returncode != 0:
                raise RuntimeError(f'stock: {" ".join(cmd)} failed; see {out}')
    open(os.path.join(build, '.built'), 'w').close()
    return exe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--python', default=os.path.join(ROOT, 'python'),
                        help='the build whose configure options to use')
    args = parser.parse_args()
    print(stock_python(args.python))


if __name__ == '__main__':
    main()
