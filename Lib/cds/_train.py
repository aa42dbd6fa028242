"""``python -m cds train``: trace a command, then dump, in one step."""

import os
import subprocess
import sys
import tempfile


def _clean_env(env):
    """'env' without the archive settings: the trace and the dump set
    their own, and a PYTHONCDSSTRICT meant for the command must not stop
    the dump."""
    return {k: v for k, v in env.items()
            if not k.startswith(('PYTHONCDS', 'PYCDS'))}


def _listed(path):
    try:
        with open(path, encoding='utf-8', errors='surrogateescape') as f:
            return sum(1 for line in f
                       if line.strip() and not line.startswith('#'))
    except FileNotFoundError:
        return 0


def run_train(args):
    output = os.path.abspath(args.output)
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    if not command and not args.list:
        print('python -m cds train: give a command to trace (after --) or '
              'a module list (--list)', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix='cds-train-') as tmp:
        lst = os.path.abspath(args.list) if args.list else \
            os.path.join(tmp, 'modules.lst')
        env = _clean_env(os.environ)
        if command:
            # every Python process the command starts inherits the trace
            # and adds its imports to the same list (under a lock)
            trace_env = dict(env, PYTHONCDS='trace', PYTHONCDSLIST=lst)
            try:
                rc = subprocess.run(command, env=trace_env).returncode
            except OSError as exc:
                print(f'python -m cds train: cannot run {command[0]!r}: '
                      f'{exc.strerror}', file=sys.stderr)
                return 1
            if rc != 0:
                print(f'python -m cds train: the command exited with status '
                      f'{rc}; no archive written', file=sys.stderr)
                return 1
        n = _listed(lst)
        if n == 0:
            print('python -m cds train: no module was traced (does the '
                  f'command run {sys.executable}?); no archive written',
                  file=sys.stderr)
            return 1
        dump = [sys.executable, '-X', 'cds=dump', '-X', f'cds_list={lst}',
                '-X', f'cds_archive={output}']
        if args.base:
            dump += ['-X', f'cds_base={args.base}']
        if args.verbose:
            dump += ['-X', 'cds_verbose']
        r = subprocess.run(dump, env=env, cwd=tmp, stderr=subprocess.PIPE,
                           text=True, errors='replace')
        sys.stderr.write(r.stderr)
        if r.returncode != 0:
            print(f'python -m cds train: the dump failed (exit status '
                  f'{r.returncode})', file=sys.stderr)
            return 1
        if not args.quiet:
            print(f'{output}: {n} modules traced')
        return 0
