"""The mutator of the module list: its text, and list or source paths that
are special files."""

import os


LIST_LIMIT_LINE = 16384          # Python/cds_internal.h, for the edges
LIST_LIMIT_ENTRIES = 1000000
SAFE_NAMES = ['sys', 'builtins', '__main__', '_cds', 'site', 'os', 'json',
              'fzapp.nosuch', 'fzapp.consts.x', 'encodings.idna',
              'test', 'Ä', '\U0001d518', 'a' * 300, '.'.join(['a'] * 200),
              '_frozen_importlib', 'zipimport', 'this_is_not_a_module']


def mutate_list(rng, lst, case_dir):
    """Mutated module-list bytes (or None: the list is a special file made
    in 'case_dir'), and notes."""
    lines = lst.split(b'\n')
    header, entries = lines[0], [ln for ln in lines[1:] if ln]
    notes = []

    def some_entry():
        return rng.randrange(len(entries)) if entries else None

    def special_file(stem):
        kind = rng.choice(['fifo', 'zero', 'dir', 'loop', 'null'])
        path = os.path.join(case_dir, stem)
        if os.path.lexists(path):
            return path, 'name used twice'
        if kind == 'fifo':
            os.mkfifo(path)
        elif kind == 'zero':
            os.symlink('/dev/zero', path)
        elif kind == 'dir':
            os.mkdir(path)
        elif kind == 'loop':
            os.symlink(path, path)
        else:
            os.symlink('/dev/null', path)
        return path, kind

    if rng.random() < 0.06:
        path, kind = special_file('app.lst')
        return None, [f'the list is a {kind}']
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(14)
        k = some_entry()
        if op == 0:
            n = rng.choice([LIST_LIMIT_LINE - 2, LIST_LIMIT_LINE - 1,
                            LIST_LIMIT_LINE, LIST_LIMIT_LINE + 1,
                            65536, 1 << 20])
            name = b'fzapp.' + b'x' * max(0, n - 30)
            line = (name + b'\tsource\t/' + b'p' * max(0, n - len(name) - 9))
            entries.insert(rng.randrange(len(entries) + 1), line[:n])
            notes.append(f'a line of {n} bytes')
        elif op == 1 and k is not None:
            bad = rng.choice([b'\xff', b'\xc3', b'\xed\xa0\x80', b'\xc0\xaf',
                              b'\xf4\x90\x80\x80', b'\xe2\x82'])
            ln = entries[k]
            at = rng.randrange(len(ln) + 1)
            entries[k] = ln[:at] + bad + ln[at:]
            notes.append(f'line {k + 2}: invalid UTF-8 {bad!r} at {at}')
        elif op == 2:
            if k is not None and rng.random() < 0.8:
                ln = entries[k]
                at = rng.randrange(len(ln) + 1)
                entries[k] = ln[:at] + b'\0' + ln[at:]
                notes.append(f'line {k + 2}: a NUL at {at}')
            else:
                entries.append(b'\0' * rng.choice([1, 100, 20000]))
                notes.append('a line of NULs')
        elif op == 3 and rng.random() < 0.3:
            n = rng.choice([LIST_LIMIT_ENTRIES - len(entries),
                            LIST_LIMIT_ENTRIES - len(entries) + 1,
                            LIST_LIMIT_ENTRIES + 1000])
            entries.extend(b'm%d\tfrozen' % j for j in range(n))
            notes.append(f'{n} more entries')
        elif op == 4 and k is not None:
            parts = entries[k].split(b'\t')
            parts[1:2] = [rng.choice([b'', b'Source', b'frozen ', b'sourc',
                                      b'builtin', b'source\tsource',
                                      b'frozen\t/x', b'\xff', b'source\r'])]
            entries[k] = b'\t'.join(parts)
            notes.append(f'line {k + 2}: kind {parts[1]!r}')
        elif op == 5:
            stem = rng.choice(['zz', 'fzz'])
            path, kind = special_file(stem + '.py')
            entries.insert(rng.randrange(len(entries) + 1),
                           stem.encode() + b'\tsource\t' + os.fsencode(path))
            notes.append(f'entry {stem}: its source is a {kind}')
        elif op == 6 and k is not None and b'\tsource\t' in entries[k]:
            name = entries[k].split(b'\t')[0]
            path = rng.choice([b'/dev/zero', b'/dev/null', b'/',
                               b'/proc/self/mem', b'/nonexistent/x.py',
                               b'relative/x.py', b'/' + b'd/' * 3000 + b'x.py',
                               b'/etc/passwd', b'/tmp/../' + name + b'.py'])
            entries[k] = name + b'\tsource\t' + path
            notes.append(f'line {k + 2}: source path {path[:40]!r}')
        elif op == 7 and k is not None:
            dup = entries[k]
            if rng.random() < 0.5 and b'\tsource\t' in dup:
                dup = dup + b'x'
            entries.insert(rng.randrange(len(entries) + 1), dup)
            notes.append(f'line {k + 2} duplicated')
        elif op == 8 and k is not None:
            ln = entries[k]
            entries[k] = ln[:rng.randrange(len(ln) + 1)]
            notes.append(f'line {k + 2} truncated')
        elif op == 9:
            header = rng.choice([b'', b'# pycds module list 2',
                                 b'\xef\xbb\xbf' + header, header + b'\r',
                                 b'garbage'])
            notes.append(f'header {header[:30]!r}')
        elif op == 10:
            name = rng.choice(SAFE_NAMES).encode()
            kind = rng.choice([b'frozen', b'source'])
            line = name + b'\t' + kind
            if kind == b'source':
                line += b'\t' + rng.choice([
                    os.fsencode(os.path.join(case_dir, 'x.py')),
                    b'/nonexistent/' + name + b'.py'])
            entries.insert(rng.randrange(len(entries) + 1), line)
            notes.append(f'entry {line[:60]!r}')
        elif op == 11 and k is not None:
            parts = entries[k].split(b'\t')
            if parts[1:2] == [b'source']:
                entries[k] = parts[0] + b'\tfrozen'
            else:
                entries[k] = (parts[0] + b'\tsource\t/nonexistent/'
                              + parts[0] + b'.py')
            notes.append(f'line {k + 2}: kind swapped')
        elif op == 12:
            rng.shuffle(entries)
            sep = rng.choice([b'\r\n', b'\n\n', b'\n#\n'])
            body = sep.join([header] + entries)
            notes.append(f'lines shuffled, separated by {sep!r}')
            return body, notes
        else:
            blob = rng.randbytes(rng.randrange(1, 64))
            entries.insert(rng.randrange(len(entries) + 1), blob)
            notes.append(f'random bytes {blob[:16]!r}...')
    body = b'\n'.join([header] + entries)
    if rng.random() < 0.8:
        body += b'\n'
    else:
        notes.append('no final newline')
    return body, notes
