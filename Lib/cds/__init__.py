"""Tools for pycds code-object archives: ``python -m cds``.

The archive a process maps is described by the ``_cds`` module; this
package works on archive files, each in a separate interpreter process,
so that checking an archive never changes, or risks, the caller.
"""

import argparse
import json
import os
import subprocess
import sys

from cds import _inspect, _train

__all__ = ['check', 'main']

# Run in the child: the archive's state and every entry's problem.
_CHECK = '''if 1:
    import _cds, json, sys
    result = _cds.check(sys.argv[1] == '1')
    info = _cds.info()
    json.dump({'usable': result is not None, 'reason': info['reason'],
               'modules': [dict(zip(('kind', 'name', 'path', 'problem'), m))
                           for m in result or ()]}, sys.stdout)
'''


def check(archive, *, deep=False, check_source=False, python=None):
    """Check every entry of *archive* in a child interpreter.

    Return a dict: 'usable' (whether the archive can be mapped by this
    interpreter), 'reason' (why not), 'modules' (kind, name, path, problem:
    None when the entry can be served now).  With *deep*, the child also
    checks canonical forms (-X cds_verify) and relocates the archive
    (-X cds_relocate), so that every relocation record is checked.
    """
    args = [python or sys.executable, '-I', '-X', 'cds=share',
            '-X', 'cds_base=none', '-X', 'cds_archive=' + os.fspath(archive)]
    if deep:
        args += ['-X', 'cds_verify', '-X', 'cds_relocate']
    args += ['-c', _CHECK, '1' if check_source else '0']
    proc = subprocess.run(args, capture_output=True, text=True,
                          errors='replace')
    if proc.returncode != 0:
        if proc.returncode < 0:
            why = f'the checking process was killed by signal {-proc.returncode}'
        else:
            lines = proc.stderr.strip().splitlines()
            why = lines[-1] if lines else f'exit status {proc.returncode}'
        return {'usable': False, 'reason': why, 'modules': []}
    return json.loads(proc.stdout)


def _verify(args):
    if not os.path.exists(args.archive):
        print(f'{args.archive}: no such file', file=sys.stderr)
        return 2
    result = check(args.archive, deep=args.deep,
                   check_source=args.check_source)
    modules = result['modules']
    bad = [m for m in modules if m['problem']]
    if args.json:
        json.dump({'archive': args.archive, **result}, sys.stdout, indent=1)
        print()
    elif not result['usable']:
        print(f'{args.archive}: not usable: {result["reason"]}')
    else:
        for m in bad:
            where = f' ({m["path"]})' if m['path'] else ''
            print(f'{m["kind"]} {m["name"]}{where}: {m["problem"]}')
        stale = sum(m['problem'].startswith('stale') for m in bad)
        print(f'{args.archive}: {len(modules)} modules, '
              f'{len(modules) - len(bad)} usable, {stale} stale, '
              f'{len(bad) - stale} corrupt')
    return 0 if result['usable'] and not bad else 1


def _run_stdlib(args):
    from cds import _stdlib
    return _stdlib.dump(args.output, libdir=args.libdir,
                        destdir=args.destdir, verbose=args.verbose)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m cds',
        description='Inspect, check and make pycds code-object archives.')
    commands = parser.add_subparsers(dest='command', required=True,
                                     metavar='COMMAND')
    verify = commands.add_parser(
        'verify', help='check every entry of an archive',
        description='Check that this interpreter can use ARCHIVE and that '
                    'every entry is intact and current: each module is '
                    'prepared as share mode prepares it (checksums, '
                    'structural checks) and its source compared with the '
                    'file now.  Exit status 1 if any entry cannot be used.')
    verify.add_argument('archive', metavar='ARCHIVE')
    verify.add_argument('--deep', action='store_true',
                        help='also check that values are in canonical form '
                             '(-X cds_verify) and every relocation record '
                             '(relocated)')
    verify.add_argument('--check-source', action='store_true',
                        help='compare the source hash of every entry, not '
                             'only where CPython would read the source')
    verify.add_argument('--json', action='store_true',
                        help='print the result as JSON')
    verify.set_defaults(run=_verify)
    stdlib = commands.add_parser(
        'stdlib', help="write the installation's default archive",
        description="Write the default archive of the standard library "
                    "(every importable module but test suites and demos, "
                    "and the frozen modules), which the interpreter maps "
                    "with no option.  make and make install run this.")
    stdlib.add_argument('-o', '--output', metavar='ARCHIVE',
                        help='where to write it (default: where the '
                             'interpreter looks for it)')
    stdlib.add_argument('--libdir', metavar='DIR',
                        help='the standard-library directory, as installed '
                             '(default: this interpreter\'s)')
    stdlib.add_argument('--destdir', metavar='DIR', default='',
                        help='read the files from under this staging '
                             'directory (make install DESTDIR=...)')
    stdlib.add_argument('-v', '--verbose', action='store_true',
                        help='say what the dump leaves out')
    stdlib.set_defaults(run=_run_stdlib)
    def reader(name, run, help, description):
        """A command that reads ARCHIVE (and can print JSON)."""
        command = commands.add_parser(name, help=help,
                                      description=description)
        command.add_argument('archive', metavar='ARCHIVE')
        command.add_argument('--json', action='store_true',
                             help='print the result as JSON')
        command.set_defaults(run=run)
        return command

    reader('info', _inspect.run_info, 'what an archive is and whose',
           'Print the format version of ARCHIVE, the interpreter build it '
           'belongs to (and whether it is this one), the options it was '
           'made with, its module count and its size by region.  Exit '
           'status 1 if this interpreter cannot use it.')
    reader('list', _inspect.run_list, 'the modules of an archive',
           'Print each module of ARCHIVE: its name, the bytes of its '
           'objects and the source file it was made from.')
    map_ = reader('map', _inspect.run_map,
                  'where the objects of each module are',
                  'Print the regions of ARCHIVE and, per module, where its '
                  'code object is and how many bytes of each region its '
                  'objects take, with its relocation and fixup records '
                  '(see Doc/library/cds-format.rst).')
    map_.add_argument('--module', action='append', metavar='NAME',
                      help='only this module (repeatable)')
    train = commands.add_parser(
        'train', help='trace a command and dump its archive, in one step',
        usage='python -m cds train [-h] -o ARCHIVE [--list LIST] '
              '[--base PATH] [-v] [-q] [-- COMMAND ...]',
        description='Run COMMAND with every Python process it starts '
                    'tracing its imports into one module list, then dump '
                    'the modules listed into ARCHIVE (with the default '
                    'archive present, only what it does not hold).  With '
                    '--list and no command, dump that list.')
    train.add_argument('-o', '--output', required=True, metavar='ARCHIVE',
                       help='the archive to write (replaced whole)')
    train.add_argument('--list', metavar='LIST',
                       help='the module list to add to and dump (default: '
                            'a temporary one)')
    train.add_argument('--base', metavar='PATH',
                       help='the base archive (-X cds_base; none: dump '
                            'everything)')
    train.add_argument('-v', '--verbose', action='store_true',
                       help='say what the dump leaves out and why')
    train.add_argument('-q', '--quiet', action='store_true',
                       help='print nothing when all went well')
    train.add_argument('command', nargs=argparse.REMAINDER,
                       metavar='COMMAND', help='the command to trace')
    train.set_defaults(run=_train.run_train)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:
        # the reader went away (| head): as a filter would, stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
