"""The installation's default archive: ``python -m cds stdlib``.

``make`` runs it for the build tree and ``make install`` for the installed
tree, after the ``.pyc`` files are compiled.  The archive holds every
importable module of the standard library and the interpreter's frozen
modules, but what programs never import:

* the test suites (``test``, ``idlelib.idle_test``): half of the standard
  library's code, imported only by CPython's own tests, which run as
  stock CPython runs them;
* demos (``turtledemo``) and the test modules of the frozen-module tests
  (``__hello__``, ``__phello__``);
* ``site-packages``: third-party code belongs in an application archive.

It also holds what the standard library compiles as its modules are
imported -- the programs of regular expressions, the code of the strings
``exec()`` and ``eval()`` run (named tuples, data classes) -- as the JDK's
default CDS archive holds the classes of a training run: a traced process
imports every archived module (but those that run a program when
imported) and the patterns and strings it compiled are added to the list.
"""

import os
import subprocess
import sys
import tempfile

# top-level names, and dotted packages, never archived
EXCLUDED = frozenset({'test', 'idlelib.idle_test', 'turtledemo',
                      '__hello__', '__phello__', 'site-packages'})


def default_archive(libdir):
    """Where the interpreter looks for the default archive of *libdir*."""
    abi = 'd' if hasattr(sys, 'gettotalrefcount') else ''
    tag = sys.implementation.cache_tag
    return os.path.join(libdir, '__pycache__', f'stdlib.{tag}{abi}.cds')


def modules(libdir):
    """(name, path) of every source module of the standard library in
    *libdir* that the default archive holds, in a stable order."""
    found = []
    for root, dirs, files in os.walk(libdir):
        rel = os.path.relpath(root, libdir)
        parts = [] if rel == '.' else rel.split(os.sep)
        dirs[:] = sorted(
            d for d in dirs
            if d.isidentifier() and '.'.join(parts + [d]) not in EXCLUDED
            and os.path.exists(os.path.join(root, d, '__init__.py')))
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext != '.py' or not stem.isidentifier():
                continue
            if not parts and stem in EXCLUDED:
                continue
            name = '.'.join(parts + ([] if stem == '__init__' else [stem]))
            if name:
                found.append((name, os.path.join(root, f)))
    return found


def frozen_modules():
    import _imp
    return sorted(n for n in _imp._frozen_module_names()
                  if not n.startswith(('__hello', '__phello')))


# modules the training import leaves out: they run a program (IDLE, a
# browser, a print) when imported, as do __main__ modules
NOT_IMPORTED = ('idlelib', 'this', 'antigravity')

TRAINING = """\
import importlib, sys
for name in sys.stdin.read().split():
    try:
        importlib.import_module(name)
    except BaseException:
        pass
"""


def compiled_lines(names, env, tmp):
    """The module-list lines of the patterns and strings a traced import
    of *names* compiled (none if the import fails or hangs)."""
    lst = os.path.join(tmp, 'training.lst')
    names = [n for n in names
             if n.split('.')[0] not in NOT_IMPORTED
             and '__main__' not in n.split('.')]
    args = [sys.executable, '-S', '-s', '-X', 'cds=trace',
            '-X', f'cds_list={lst}', '-c', TRAINING]
    try:
        subprocess.run(args, env=env, cwd=tmp, input='\n'.join(names),
                       text=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
        with open(lst, encoding='utf-8', errors='surrogateescape') as f:
            return [line for line in f
                    if line.startswith(('re\tregex\t', 'builtins\tstring\t'))]
    except (OSError, subprocess.TimeoutExpired):
        return []


def write_list(path, libdir, compiled=()):
    """Write the module list of the default archive of *libdir*, with the
    list lines *compiled*; return the number of source modules."""
    sources = modules(libdir)
    with open(path, 'w', encoding='utf-8', errors='surrogateescape') as f:
        f.write('# pycds module list 1\n')
        for name in frozen_modules():
            f.write(f'{name}\tfrozen\n')
        for name, source in sources:
            f.write(f'{name}\tsource\t{source}\n')
        f.writelines(compiled)
    return len(sources)


def dump(output=None, *, libdir=None, destdir='', verbose=False):
    """Write the default archive of the standard library in *libdir* (the
    final location; default: this interpreter's), reading the files under
    *destdir* (a staging directory) if given.  Return the exit status of
    the dump."""
    libdir = os.path.abspath(libdir or sys._stdlib_dir)
    staged = os.path.join(destdir, libdir.lstrip('/')) if destdir else libdir
    if output is None:
        output = os.path.join(destdir, default_archive(libdir).lstrip('/')) \
            if destdir else default_archive(libdir)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    # a clean environment but for the search path: the files to archive are
    # found first, and .pyc files are used (and written) as stock would
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('PYTHON', 'PYCDS'))}
    env['PYTHONPATH'] = staged
    with tempfile.TemporaryDirectory(prefix='cds-stdlib-') as tmp:
        lst = os.path.join(tmp, 'stdlib.lst')
        compiled = compiled_lines([name for name, _ in modules(staged)],
                                  env, tmp)
        write_list(lst, staged, compiled)
        args = [sys.executable, '-S', '-s', '-X', 'cds=dump',
                '-X', 'cds_base=none', '-X', f'cds_list={lst}',
                '-X', f'cds_archive={output}']
        if destdir:
            args += ['-X', f'cds_dump_strip={os.path.abspath(destdir)}']
        if verbose:
            args += ['-X', 'cds_verbose']
        return subprocess.run(args, env=env, cwd=tmp).returncode
