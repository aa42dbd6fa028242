"""The container recipe of Doc/library/cds-container.rst, without a
container engine.

Usage (from the top of a built tree; run-tests runs it):

    ./python Tools/pycds/container_test.py [--keep]

1. Installs the built interpreter into a temporary prefix (make install
   prefix=..., which also writes the installation's default archive).
2. Installs an application: a package into the prefix's site-packages and
   a main script in an application directory.
3. Builds the application's archive at "image build" time with
   python -m cds train.
4. Makes the prefix and the application read-only (owned by root where the
   test runs as root).
5. Runs the application as another user (nobody, when run as root), from
   another working directory, with only environment variables set
   (PYTHONCDSARCHIVE, PYTHONCDSSTRICT, PYTHONCDSSTATS), and checks that its
   output is the output of -X cds=off and that modules were served from
   both the default and the application archive.

The last line of output is "N passed, N failed" (1 check: the recipe).
"""

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP_PACKAGE = {
    'shop/__init__.py': '"""A small application package."""\n',
    'shop/models.py': (
        'import dataclasses, decimal\n\n'
        '@dataclasses.dataclass(frozen=True)\n'
        'class Item:\n'
        '    name: str\n'
        '    price: decimal.Decimal\n'),
    'shop/report.py': (
        'import json, textwrap\n'
        'from shop.models import Item\n\n'
        'def report(items):\n'
        '    total = sum(i.price for i in items)\n'
        '    return json.dumps({"items": [i.name for i in items],\n'
        '                       "total": str(total)}, sort_keys=True)\n'),
}
MAIN = (
    'import decimal, sys\n'
    'from shop.models import Item\n'
    'from shop.report import report\n'
    'items = [Item("tea", decimal.Decimal("3.50")),\n'
    '         Item("cake", decimal.Decimal("4.25"))]\n'
    'print(report(items))\n'
    'print(sys.flags.ignore_environment, len(sys.argv))\n')


def write(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)


def run(cmd, **kwargs):
    r = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if r.returncode != 0:
        raise SystemExit(f'container_test: {" ".join(cmd)} failed '
                         f'({r.returncode}):\n{r.stdout}{r.stderr}')
    return r


def other_user():
    """subprocess.run() arguments running a child as 'nobody' (root only),
    and the uid it runs as."""
    if os.geteuid() != 0:
        return {}, os.geteuid()
    nobody = pwd.getpwnam('nobody')
    return ({'user': nobody.pw_uid, 'group': nobody.pw_gid,
             'extra_groups': []}, nobody.pw_uid)


def make_read_only(top):
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & ~0o222)
    os.chmod(top, os.stat(top).st_mode & ~0o222)


def recipe(work):
    prefix = os.path.join(work, 'prefix')
    # 1. build and install (make install writes the default archive)
    # (without the test suite and pip: an application image's usual choice,
    # and a quicker install)
    run(['make', '-s', 'install', f'prefix={prefix}', 'ENSUREPIP=no',
         'TEST_MODULES=no'], cwd=ROOT)
    version = sysconfig.get_python_version()
    python = os.path.join(prefix, 'bin', f'python{version}')
    stdlib = os.path.join(prefix, 'lib', f'python{version}')
    # 2. install the application
    site = os.path.join(stdlib, 'site-packages')
    write(site, APP_PACKAGE)
    run([python, '-m', 'compileall', '-q', os.path.join(site, 'shop')])
    app = os.path.join(work, 'app')
    write(app, {'main.py': MAIN})
    archive = os.path.join(app, 'app.cds')
    # 3. its archive, at image-build time
    run([python, '-m', 'cds', 'train', '-q', '-o', archive, '--',
         python, os.path.join(app, 'main.py')], cwd=app, env={})
    # 4. read-only: the image's layers
    for top in (prefix, app):
        make_read_only(top)
    # 5. run as another user, elsewhere, configured by the environment only
    user, uid = other_user()
    elsewhere = os.path.join(work, 'run')
    os.mkdir(elsewhere)
    os.chown(elsewhere, uid, -1)
    stats = os.path.join(elsewhere, 'stats')
    env = {'PATH': '/usr/bin:/bin', 'PYTHONCDSARCHIVE': archive,
           'PYTHONCDSSTRICT': '1', 'PYTHONCDSSTATS': stats}
    main = os.path.join(app, 'main.py')
    served = run([python, main], cwd=elsewhere, env=env, **user)
    off = run([python, '-X', 'cds=off', main], cwd=elsewhere,
              env={'PATH': env['PATH']}, **user)
    problems = []
    if (served.stdout, served.stderr) != (off.stdout, off.stderr):
        problems.append(f'output differs from -X cds=off:\n{served.stdout}'
                        f'{served.stderr}\n---\n{off.stdout}{off.stderr}')
    with open(stats) as f:
        fields = dict(w.split('=') for w in f.read().split())
    if fields['active'] != '1' or int(fields['served']) < 10:
        problems.append(f'not served: {fields}')
    verbose = run([python, '-X', 'cds_verbose=2', main], cwd=elsewhere,
                  env=env, **user).stderr
    for line in ('served: shop.models (application archive)',
                 'served: json (default archive)'):
        if line not in verbose:
            problems.append(f'no "{line}" in:\n{verbose}')
    summary = [l for l in verbose.splitlines() if l.startswith('cds: exit:')]
    if len(summary) != 1 or not summary[0].endswith(
            ', 0 stale, 0 not in the archive, 0 refused'):
        problems.append(f'at exit: {summary}')
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--keep', action='store_true',
                        help='keep the temporary directory')
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='cds-container-')
    os.chmod(work, 0o755)       # the other user passes through it
    try:
        problems = recipe(work)
    finally:
        if args.keep:
            print(f'container_test: kept {work}')
        else:
            for root, dirs, files in os.walk(work):
                for d in dirs:
                    os.chmod(os.path.join(root, d), 0o755)
            shutil.rmtree(work)
    for p in problems:
        print(f'container_test: {p}')
    print('container_test: installed, trained, served read-only as another '
          'user' if not problems else 'container_test: FAILED')
    print(f'{0 if problems else 1} passed, {1 if problems else 0} failed')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
