"""Helpers shared by the pycds tests and the tools in Tools/pycds.

The tools (bench.py, memory.py, regrtest_compare.py, import_steps.py) run
with the built interpreter, whose standard library holds this package, and
import this module as test.test_cds.util: this is the one place for

- the environment variables the interpreter reads (CDS_ENV_VARS) and the
  environment child processes start from (clean_env, timing_env);
- running an interpreter and building an archive (run_python, make_archive
  and the -X option lists trace_args, dump_args, share_args);
- module lists: reading them (read_list) and writing one of the whole
  standard library (write_stdlib_list);
- the programs and site directories the tools measure (STDLIB_IMPORTS,
  pip_site);
- the tests' fixtures (write_files, the small application APP_FILES and
  AppTestCase).
"""

import _imp
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

from test.support import os_helper

# Every environment variable that changes what the archive does (the
# interpreter reads them in Python/cds_config.c; test_options checks this
# list against the sources): child processes of the tests and tools start
# without them.
CDS_ENV_VARS = (
    'PYTHONCDS', 'PYTHONCDSLIST', 'PYTHONCDSARCHIVE', 'PYTHONCDSVERBOSE',
    'PYTHONCDSPROTECT', 'PYTHONCDSSTATS', 'PYTHONCDSVERIFY',
    'PYTHONCDSCHECKSOURCE', 'PYTHONCDSBASE', 'PYTHONCDSSTRICT',
    # the older names of the original tool
    'PYCDSMODE', 'PYCDSLIST', 'PYCDSARCHIVE', 'PYCDSVERBOSE',
)

STDLIB = os.path.dirname(os.__file__)


def clean_env(**changes):
    """os.environ without CDS_ENV_VARS, then 'changes' applied: a variable
    given as None is removed, any other value is set."""
    env = {k: v for k, v in os.environ.items() if k not in CDS_ENV_VARS}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def timing_env(**changes):
    """clean_env() for measurements: the baseline is a warm cache of .pyc
    files, so the runs without the archive may write them."""
    return clean_env(PYTHONDONTWRITEBYTECODE=None, **changes)


# -- running the interpreter ------------------------------------------------

def trace_args(lst):
    return ['-X', 'cds=trace', '-X', f'cds_list={lst}']


def dump_args(lst, archive):
    return ['-X', 'cds=dump', '-X', f'cds_list={lst}',
            '-X', f'cds_archive={archive}']


def share_args(archive):
    return ['-X', 'cds=share', '-X', f'cds_archive={archive}']


# What keeps a child from mapping the installation's default archive, so
# that a test sees only the archive it made.
NO_BASE = ('-X', 'cds_base=none')


def run_python(*args, python=None, env=None, cwd=None, input=None,
               timeout=300, default_archive=False, **kwargs):
    """Run 'python' (default: the interpreter under test) with 'args';
    return the CompletedProcess (text).  The environment defaults to
    clean_env(); the child maps the default archive only if
    'default_archive' is true or 'args' choose a base archive; other
    keyword arguments go to subprocess.run()."""
    if not default_archive and not any(str(a).startswith('cds_base')
                                       for a in args):
        args = NO_BASE + args
    cmd = [python or sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True,
                          env=clean_env() if env is None else env,
                          cwd=cwd, input=input, timeout=timeout, **kwargs)


def run_checked(*args, **kwargs):
    """run_python(), raising RuntimeError with the output on failure."""
    r = run_python(*args, **kwargs)
    if r.returncode != 0:
        raise RuntimeError(f'{args} exited with {r.returncode}:\n'
                           f'{r.stdout}{r.stderr}')
    return r


def make_archive(lst, archive, program, *, options=(), **kwargs):
    """Trace 'program' (a list of arguments: a script, '-c', code, ...)
    into the module list 'lst', then dump it into 'archive', both with the
    interpreter 'options'; return the dump's CompletedProcess.  Keyword
    arguments go to run_python(); a failure raises RuntimeError."""
    run_checked(*options, *trace_args(lst), *program, **kwargs)
    return run_checked(*options, *dump_args(lst, archive), **kwargs)


# -- module lists -------------------------------------------------------------

LIST_HEADER = '# pycds module list 1'


def read_list(path):
    """Parse a module list into [(name, kind, path-or-None)]."""
    entries = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.rstrip('\n')
            if not line or line.startswith('#'):
                continue
            fields = line.split('\t')
            entries.append((fields[0], fields[1],
                            fields[2] if len(fields) > 2 else None))
    return entries


def write_list(path, entries):
    """Write a module list of [(name, kind, path-or-None)]."""
    with open(path, 'w', encoding='utf-8') as f:
        f.write(LIST_HEADER + '\n')
        for name, kind, source in entries:
            f.write('\t'.join([name, kind] + ([source] if source else []))
                    + '\n')


_STDLIB_QUERY = ('import os, _imp; print(os.path.dirname(os.__file__)); '
                 'print(*_imp._frozen_module_names())')


def write_stdlib_list(path, python=None):
    """Write a module list of every module and package of the standard
    library of 'python' (default: this interpreter), test packages
    included, plus its frozen modules; return the number of source
    modules listed."""
    if python is None:
        lib, frozen = STDLIB, _imp._frozen_module_names()
    else:
        lib, frozen = run_checked('-c', _STDLIB_QUERY, python=python).stdout.split('\n', 1)
        frozen = frozen.split()
    sources = []
    for root, dirs, files in os.walk(lib):
        dirs[:] = sorted(d for d in dirs
                         if d.isidentifier() and d != 'site-packages')
        rel = os.path.relpath(root, lib)
        parts = [] if rel == '.' else rel.split(os.sep)
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext != '.py' or not stem.isidentifier():
                continue
            name = '.'.join(parts + ([] if stem == '__init__' else [stem]))
            if name:
                sources.append((name, 'source', os.path.join(root, f)))
    write_list(path, [(name, 'frozen', None) for name in sorted(frozen)]
               + sources)
    return len(sources)


def pyc_size(lst):
    """Total size of the .pyc files of the source modules of a list."""
    total = 0
    for name, kind, source in read_list(lst):
        if kind == 'source':
            try:
                total += os.path.getsize(importlib.util.cache_from_source(source))
            except OSError:
                pass
    return total


# -- what the tools measure -------------------------------------------------

# The standard-library program of bench.py, memory.py and import_steps.py.
STDLIB_IMPORTS = '''\
import asyncio, json, email.message, http.client, logging, argparse, unittest
import typing, dataclasses, decimal, xml.etree.ElementTree, sqlite3
import urllib.request, subprocess, tempfile, pathlib, inspect, ast
'''


def pip_site(python, venv):
    """A venv of 'python' in the directory 'venv' (made once), with pip from
    ensurepip's bundled wheel (no network); return its site-packages."""
    if not os.path.exists(os.path.join(venv, 'bin', 'python')):
        subprocess.run([python, '-m', 'venv', '--clear', venv], check=True,
                       env=timing_env(), stdout=subprocess.DEVNULL)
    r = run_checked('-c', 'import sysconfig; print(sysconfig.get_path("purelib"))',
                    python=os.path.join(venv, 'bin', 'python'), env=timing_env())
    return r.stdout.strip()


# -- test fixtures ------------------------------------------------------------

def write_files(root, files):
    """Write {relative path: text} below 'root' (the text dedented)."""
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(textwrap.dedent(text).lstrip())


def _reachable(path):
    """Whether other users may pass through every directory of 'path'."""
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def temp_dir(add_cleanup):
    """A new temporary directory (its real path, mode 0700), removed by the
    cleanup function 'add_cleanup' (addCleanup or addClassCleanup).  It is
    made where other users can reach it once its mode allows (regrtest's
    own temporary directory is private), for the tests that run a child
    without root's privileges (unprivileged())."""
    parents = [tempfile.gettempdir(), '/tmp', '/var/tmp']
    parent = next((d for d in map(os.path.realpath, parents)
                   if os.path.isdir(d) and _reachable(d)), None)
    path = os.path.realpath(tempfile.mkdtemp(prefix='test_cds-', dir=parent))
    add_cleanup(os_helper.rmtree, path)
    return path


def unprivileged():
    """Keyword arguments of subprocess.run() that run the child without
    root's privileges (as 'nobody'): none when the tests do not run as
    root.  Skips the test where that is not possible."""
    if os.geteuid() != 0:
        return {}
    import pwd
    try:
        nobody = pwd.getpwnam('nobody')
    except KeyError:
        raise unittest.SkipTest('running as root, and no user "nobody"')
    kwargs = {'user': nobody.pw_uid, 'group': nobody.pw_gid,
              'extra_groups': []}
    r = run_python('-c', 'import os; print(os.geteuid())', **kwargs)
    if r.returncode != 0 or r.stdout.strip() != str(nobody.pw_uid):
        raise unittest.SkipTest('running as root, and "nobody" cannot run '
                                f'{sys.executable}: {r.stderr.strip()}')
    return kwargs


# A small application: constants of every archived type, closures, classes,
# frozensets (hash-seed dependent), non-ASCII identifiers and strings.
APP_FILES = {
    'cdsapp/__init__.py': '''
        """The cdsapp package."""
        from cdsapp import consts, shapes
        VERSION = (1, 2)
    ''',
    'cdsapp/consts.py': '''
        BIG = 2 ** 200 - 12345
        NEG = -(2 ** 70)
        SMALL = (-5, 0, 256, 257)
        FLOATS = (1.5, -0.0, float("inf"), 1e300)
        COMPLEX = 3 + 4j
        DATA = b"\\x00\\xffbytes"
        LATIN1 = "caf\\xe9 na\\xefve"
        UCS2 = "\\u03b1\\u03b2\\u03b3 \\u4e2d\\u6587"
        UCS4 = "emoji \\U0001F600 \\U0001F680"
        ÄNDERUNG = "identifier with umlaut"
        EMPTY = ("", b"", ())
        NESTED = (1, (2, (3, ("deep", None, True, False, ...))))

        def member(x):
            return x in {"alpha", "beta", "gamma", 42, (1, 2)}

        def keyword(word):
            return word in frozenset({"if", "else", "while"})
    ''',
    'cdsapp/shapes.py': '''
        import dataclasses, math

        @dataclasses.dataclass
        class Point:
            x: float
            y: float

            def norm(self):
                return math.hypot(self.x, self.y)

        def make_adder(n):
            def add(x):
                return x + n
            return add

        def fail(depth=0):
            if depth == 2:
                raise ValueError("boom from shapes")
            return fail(depth + 1)

        class Meta(type):
            def __repr__(cls):
                return f"<Meta {cls.__qualname__}>"

        class Shape(metaclass=Meta):
            sides = 0
            def describe(self):
                return f"{type(self).__name__} with {self.sides} sides"

        class Square(Shape):
            sides = 4
    ''',
    'main.py': '''
        import sys, json, traceback
        import cdsapp
        from cdsapp import consts, shapes
        out = []
        out.append(repr((consts.BIG, consts.NEG, consts.SMALL, consts.FLOATS,
                         consts.COMPLEX, consts.DATA, consts.LATIN1,
                         consts.UCS2, consts.UCS4, consts.ÄNDERUNG,
                         consts.EMPTY, consts.NESTED)))
        out.append(repr([consts.member(v) for v in
                         ("alpha", "delta", 42, (1, 2), 7)]))
        out.append(repr([consts.keyword(w) for w in ("if", "for")]))
        p = shapes.Point(3, 4)
        out.append(repr((p, p.norm(), shapes.make_adder(5)(10))))
        out.append(repr((shapes.Square().describe(), shapes.Square)))
        try:
            shapes.fail()
        except ValueError:
            tb = traceback.format_exc()
            out.append(tb.replace(sys.prefix, "<prefix>"))
        for m in (cdsapp, consts, shapes, json):
            spec = m.__spec__
            out.append(repr((m.__name__, m.__file__, m.__cached__,
                             spec.origin, spec.cached, type(m.__loader__).__name__,
                             getattr(m, "__path__", None),
                             spec.submodule_search_locations,
                             m.__doc__ and m.__doc__[:20])))
        print("\\n".join(out))
    ''',
}

INFO = 'import _cds, json; print(json.dumps(_cds.info()))'


class AppTestCase(unittest.TestCase):
    """The application APP_FILES in a temporary directory 'tmp', with its
    module list 'lst' and archive 'archive' there, and 'scratch', a
    directory of each test's own.

    With ARCHIVE_PER_CLASS, for tests that only read the archive, the
    directory is made and the application traced and dumped once, in
    setUpClass, which also sets 'expected', the application's output
    without the archive, and 'good', the archive's bytes; otherwise each test has a fresh directory and
    calls trace_and_dump() itself."""

    ARCHIVE_PER_CLASS = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.ARCHIVE_PER_CLASS:
            cls._make_app(cls, cls.addClassCleanup)
            make_archive(cls.lst, cls.archive, [cls.main], cwd=cls.tmp)
            # the application's output without the archive
            cls.expected = run_checked(cls.main, cwd=cls.tmp).stdout
            with open(cls.archive, 'rb') as f:
                cls.good = f.read()     # for the tests that damage copies

    def setUp(self):
        super().setUp()
        if not self.ARCHIVE_PER_CLASS:
            self._make_app(self, self.addCleanup)
        self.scratch = temp_dir(self.addCleanup)

    @staticmethod
    def _make_app(obj, add_cleanup):
        obj.tmp = temp_dir(add_cleanup)
        write_files(obj.tmp, APP_FILES)
        obj.main = os.path.join(obj.tmp, 'main.py')
        obj.lst = os.path.join(obj.tmp, 'app.lst')
        obj.archive = os.path.join(obj.tmp, 'app.cds')

    def python(self, *args, env=None, check=True, **kwargs):
        r = run_python(*args, env=env, cwd=self.tmp, **kwargs)
        if check:
            self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def trace_and_dump(self, *options):
        return make_archive(self.lst, self.archive, [self.main],
                            options=options, cwd=self.tmp)

    def dump(self, *args, lst=None, archive=None, check=True):
        return self.python(*dump_args(lst or self.lst, archive or self.archive),
                           *args, check=check)

    def share(self, *args, archive=None, env=None, check=True, **kwargs):
        return self.python(*share_args(archive or self.archive), *args,
                           env=env, check=check, **kwargs)

    def share_info(self, *args, code='', archive=None, env=None, **kwargs):
        """Run 'code' in share mode; return the process and _cds.info()
        at its end."""
        r = self.share(*args, '-c', code + '\n' + INFO, archive=archive,
                       env=env, **kwargs)
        return r, json.loads(r.stdout.splitlines()[-1])

    def app_code(self, code):
        """'code' (dedented) preceded by putting the application on
        sys.path."""
        return (f'import sys; sys.path.insert(0, {self.tmp!r})\n'
                + textwrap.dedent(code))


class ProgramTestCase(unittest.TestCase):
    """PROGRAM, a script that prints JSON on stdout and, last on stderr,
    "COUNTER served: N" (N the _cds.info() counter COUNTER), written to
    'prog' in a temporary directory 'tmp' with the paths 'lst' and
    'archive' there."""

    PROGRAM = ''
    COUNTER = ''

    def setUp(self):
        super().setUp()
        self.tmp = temp_dir(self.addCleanup)
        self.prog = os.path.join(self.tmp, 'prog.py')
        with open(self.prog, 'w') as f:
            f.write(self.PROGRAM)
        self.lst = os.path.join(self.tmp, 'app.lst')
        self.archive = os.path.join(self.tmp, 'app.cds')

    def served(self, r):
        """The counter in the run of PROGRAM 'r'."""
        return int(re.search(rf'^{self.COUNTER} served: (\d+)$', r.stderr,
                             re.M)[1])

    def run_prog(self, *args, env=None):
        """PROGRAM's output and counter, run with 'args'."""
        r = run_checked(*args, self.prog, cwd=self.tmp, env=env)
        return json.loads(r.stdout), self.served(r)

    def trace_and_dump(self, env=None):
        """Trace PROGRAM into 'lst', dump 'archive' (-X cds_verbose=2)."""
        run_checked(*trace_args(self.lst), self.prog, cwd=self.tmp, env=env)
        return run_checked(*dump_args(self.lst, self.archive), '-X',
                           'cds_verbose=2', cwd=self.tmp, env=env)
