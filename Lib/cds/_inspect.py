"""``python -m cds info``, ``list`` and ``map``: what an archive file holds
and where, read from the file (Lib/cds/_format.py) without mapping it."""

import json
import os
import sys

from cds import _format


def _this_build():
    """(format version, fingerprint) this interpreter reads archives of."""
    import _cds
    info = _cds.info()
    return info['format_version'], info['fingerprint']


def _load(path):
    """(bytes, header, problem): the archive read, or problem set to why it
    cannot be (the header then None)."""
    try:
        data = _format.read_file(path)
        return data, _format.parse(data), None
    except _format.ArchiveError as exc:
        return None, None, str(exc)


def _fail(args, problem):
    if args.json:
        json.dump({'archive': args.archive, 'problem': problem}, sys.stdout,
                  indent=1)
        print()
    else:
        print(f'{args.archive}: {problem}', file=sys.stderr)
    return 1


def _summary(data, h):
    """The facts of 'info', as a dict (JSON-ready)."""
    version, fingerprint = _this_build()
    entries = _format.read_index(data)
    regions = {r: h[f'{r}_size'] for r in _format.REGIONS}
    own = h['fingerprint'].hex() == fingerprint
    return {
        'format_version': h['format_version'],
        'fingerprint': h['fingerprint'].hex(),
        'this_interpreter': own,
        'optimize': h['optimize'],
        'preferred_base': h['preferred_base'],
        'file_size': h['file_size'],
        'modules': len(entries),
        'source_modules': sum(e['kind'] == 'source' for e in entries),
        'frozen_modules': sum(e['kind'] == 'frozen' for e in entries),
        'regex_programs': sum(e['kind'] == 'regex' for e in entries),
        'string_codes': sum(e['kind'] == 'string' for e in entries),
        'regions': regions,
        'seed_size': h['seed_size'],
        'index_size': h['module_count'] * _format.ENTRY.size,
        'string_table_size': h['strtab_size'],
        'relocations_size': 8 * h['reloc_count'],
        'fixups_size': 8 * h['fixup_count'],
    }


def _mb(n):
    return f'{n / 1e6:9.2f} MB'


def run_info(args):
    data, h, problem = _load(args.archive)
    if problem:
        return _fail(args, problem)
    s = _summary(data, h)
    usable = s['this_interpreter'] and s['optimize'] == sys.flags.optimize
    if args.json:
        json.dump({'archive': args.archive, **s, 'usable_here': usable},
                  sys.stdout, indent=1)
        print()
        return 0 if usable else 1
    if s['this_interpreter']:
        build = 'this interpreter\'s build'
    else:
        build = 'another interpreter build (this one is ' \
                f'{_this_build()[1][:16]}...)'
    print(f'archive:        {args.archive}')
    print(f'format version: {s["format_version"]}')
    print(f'build:          {s["fingerprint"][:16]}... ({build})')
    print(f'made with:      -O level {s["optimize"]} (this process: '
          f'{sys.flags.optimize})')
    print(f'laid out for:   {s["preferred_base"]:#x}')
    print(f'modules:        {s["source_modules"] + s["frozen_modules"]} '
          f'({s["source_modules"]} source, {s["frozen_modules"]} frozen)')
    print(f'regexes:        {s["regex_programs"]} (programs of regular '
          f'expressions)')
    print(f'strings:        {s["string_codes"]} (code of strings exec() '
          f'and eval() ran)')
    print(f'size:           {s["file_size"]} bytes')
    for r in _format.REGIONS:
        print(f'  {r:5} {_mb(s["regions"][r])}  '
              f'{_format.REGION_TITLES[r]}')
    print(f'  index {_mb(s["index_size"] + s["string_table_size"])}  '
          f'module index and names')
    print(f'  reloc {_mb(s["relocations_size"])}  relocation bitmaps')
    print(f'  fixup {_mb(s["fixups_size"])}  fixups')
    if not usable:
        why = ('made by another interpreter build' if not s['this_interpreter']
               else 'made with another optimization level (-O)')
        print(f'not usable by this interpreter: {why}')
        return 1
    return 0


def _path(e):
    return os.fsdecode(e['path']) if e['path'] is not None else None


def run_list(args):
    data, h, problem = _load(args.archive)
    if problem:
        return _fail(args, problem)
    entries = _format.read_index(data)
    rows = [{'name': e['name'], 'kind': e['kind'],
             'path': _path(e) if e['kind'] == 'source' else None,
             'size': _format.module_size(e)} for e in entries]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    width = max((len(r['name']) for r in rows), default=0)
    for r in rows:
        where = r['path'] if r['path'] is not None else f'({r["kind"]})'
        print(f'{r["name"]:{width}}  {r["size"]:9}  {where}')
    return 0


def run_map(args):
    data, h, problem = _load(args.archive)
    if problem:
        return _fail(args, problem)
    entries = _format.read_index(data)
    if args.module:
        entries = [e for e in entries if e['name'] in args.module]
    rows = []
    for e in entries:
        ranges = {r: [e[f'{r}_start'], e[f'{r}_end']]
                  for r in _format.MODULE_REGIONS}
        rows.append({'name': e['name'], 'kind': e['kind'],
                     'code': e['code'], 'ranges': ranges,
                     'relocations_size': 8 * e['reloc_count'],
                     'fixups': e['fixup_count']})
    if args.json:
        regions = {r: [h[f'{r}_offset'], h[f'{r}_offset'] + h[f'{r}_size']]
                   for r in _format.REGIONS}
        json.dump({'archive': args.archive, 'regions': regions,
                   'modules': rows}, sys.stdout, indent=1)
        print()
        return 0
    print('regions (file offsets):')
    for r in _format.REGIONS:
        lo = h[f'{r}_offset']
        print(f'  {r:5} {lo:#010x}-{lo + h[f"{r}_size"]:#010x} '
              f'{_mb(h[f"{r}_size"])}  {_format.REGION_TITLES[r]}')
    print(f'  (shared strings are shared by all modules; {h["seed_size"]} '
          'bytes of them are the start-up strings)')
    print()
    cols = ''.join(f'{r:>9}' for r in _format.MODULE_REGIONS)
    print(f'{"module":30} {"code at":>10}{cols}{"relocs":>8}{"fixups":>8}')
    totals = dict.fromkeys(_format.MODULE_REGIONS, 0)
    for row in rows:
        sizes = ''
        for r in _format.MODULE_REGIONS:
            lo, hi = row['ranges'][r]
            totals[r] += hi - lo
            sizes += f'{hi - lo:9}'
        name = row['name'] + (f' ({row["kind"]})' if row['kind'] != 'source'
                              else '')
        print(f'{name:30} {row["code"]:#10x}{sizes}'
              f'{row["relocations_size"]:8}{row["fixups"]:8}')
    sums = ''.join(f'{totals[r]:9}' for r in _format.MODULE_REGIONS)
    print(f'{"total (" + str(len(rows)) + " modules)":30} {"":10}{sums}')
    return 0
