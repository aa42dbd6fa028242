"""Compare archived code objects with normally loaded ones, recursively.

Run in share mode:  python -X cds=share -X cds_archive=A -m
test.test_cds.roundtrip LIST.  For every source module of the module list
LIST that the archive serves, the archived code object is compared field by
field with the one unmarshalled from the module's .pyc (or compiled from
its source).  Prints one line per mismatch and a JSON summary last.
"""

import _cds
import _imp
import importlib.util
import json
import marshal
import os
import struct
import sys
import types

CODE_FIELDS = ('co_argcount', 'co_posonlyargcount', 'co_kwonlyargcount',
               'co_nlocals', 'co_stacksize', 'co_flags', 'co_firstlineno',
               'co_code', 'co_names', 'co_varnames', 'co_cellvars',
               'co_freevars', 'co_filename', 'co_name', 'co_qualname',
               'co_linetable', 'co_exceptiontable')


def compare(a, b, where, self_equal=True):
    if type(a) is not type(b):
        raise AssertionError(f'{where}: {type(a).__name__} != {type(b).__name__}')
    if isinstance(a, types.CodeType):
        for field in CODE_FIELDS:
            if getattr(a, field) != getattr(b, field):
                raise AssertionError(f'{where}.{field} differs')
        if list(a.co_positions()) != list(b.co_positions()):
            raise AssertionError(f'{where}: co_positions() differs')
        if list(a.co_lines()) != list(b.co_lines()):
            raise AssertionError(f'{where}: co_lines() differs')
        if len(a.co_consts) != len(b.co_consts):
            raise AssertionError(f'{where}.co_consts: length differs')
        for i, (x, y) in enumerate(zip(a.co_consts, b.co_consts)):
            compare(x, y, f'{where}.co_consts[{i}]', self_equal)
        # NaN constants make even two loads of the same .pyc unequal
        if self_equal and a != b:
            raise AssertionError(f'{where}: code objects not equal')
        if marshal.loads(marshal.dumps(a)) != b and self_equal:
            raise AssertionError(f'{where}: marshal round trip differs')
    elif isinstance(a, tuple):
        if len(a) != len(b):
            raise AssertionError(f'{where}: length differs')
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f'{where}[{i}]', self_equal)
    elif isinstance(a, frozenset):
        if a != b:
            raise AssertionError(f'{where}: frozenset differs')
    elif a != b and not (a != a and b != b):
        raise AssertionError(f'{where}: {a!r} != {b!r}')


def reference(path):
    """The module's code as a normal import loads it: from its .pyc when
    that is current (timestamp-based, matching mtime and size), else
    compiled from the source.  Returns it twice (two loads)."""
    st = os.stat(path)
    try:
        with open(importlib.util.cache_from_source(path), 'rb') as f:
            data = f.read()
        flags, mtime, size = struct.unpack('<III', data[4:16])
        if (data[:4] == importlib.util.MAGIC_NUMBER and flags == 0
                and mtime == int(st.st_mtime) & 0xFFFFFFFF
                and size == st.st_size & 0xFFFFFFFF):
            return marshal.loads(data[16:]), marshal.loads(data[16:])
    except (FileNotFoundError, ValueError, EOFError, struct.error):
        pass
    with open(path, 'rb') as f:
        source = f.read()
    return (compile(source, path, 'exec', dont_inherit=True),
            compile(source, path, 'exec', dont_inherit=True))


def main(list_path):
    compared = mismatches = not_served = 0
    with open(list_path, encoding='utf-8') as f:
        lines = [l.rstrip('\n').split('\t') for l in f
                 if l.strip() and not l.startswith('#')]
    for fields in lines:
        if fields[1] != 'source':
            continue
        name, path = fields[0], fields[2]
        code = _imp._cds_find_code(name, path)
        if code is None:
            not_served += 1
            continue
        ref, ref2 = reference(path)
        try:
            # the module's code object is a heap copy of the archived one,
            # sharing its constants and tables
            assert not _cds.is_archived(code), f'{name}: not a copy'
            assert _cds.is_archived(code.co_linetable), f'{name}: not archived'
            compare(code, ref, name, self_equal=(ref == ref2))
        except AssertionError as exc:
            mismatches += 1
            print('MISMATCH', exc)
        compared += 1
    print(json.dumps({'compared': compared, 'mismatches': mismatches,
                      'not_served': not_served}))


if __name__ == '__main__':
    main(sys.argv[1])
