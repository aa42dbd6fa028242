"""The mutators of the archive's tables: the header, the module index, the
string table, one module's relocation and fixup records."""

from collections import Counter

from .model import GC_HEAD, M64, OB_REFCNT, OB_SIZE, OB_TYPE, get, put
from .model import index_checksum, seed_checksum
from .mutant import Mutant, interesting, pick_module


def mutate_header(rng, model):
    mu = Mutant(model)
    size = model.fmt.HEADER.size
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(4)
        if op == 0:
            span = size if rng.random() < 0.9 else model.fmt.PAGE
            bit = rng.randrange(8 * span)
            mu.data[bit // 8] ^= 1 << (bit % 8)
            mu.note(f'flip bit {bit % 8} of header byte {bit // 8:#x}')
        elif op == 1:
            at = rng.randrange(size)
            mu.data[at] = rng.choice([0, 0xff, rng.randrange(256)])
            mu.note(f'set header byte {at:#x} to {mu.data[at]:#x}')
        else:
            field = rng.choice([f for f in model.fmt.HEADER_FIELDS
                                if f != 'magic'])
            off, fsize = model.hf[field]
            old = get(mu.data, off, fsize)
            if fsize > 8:
                at = off + rng.randrange(fsize)
                mu.data[at] ^= 1 << rng.randrange(8)
                mu.note(f'{field}: flip a bit at +{at - off}')
                continue
            fields = [mu.header_field(f) for f in model.hf
                      if model.hf[f][1] == 8]
            new = (rng.choice(fields) if op == 3 and fsize == 8
                   else interesting(rng, old, fsize, model))
            put(mu.data, off, new, fsize)
            mu.note(f'{field}: {old:#x} -> {new & ((1 << 8 * fsize) - 1):#x}')
    forge = rng.random() < 0.8
    if forge and rng.random() < 0.5:
        # also the checksums the header's offsets and counts select
        h = model.fmt.read_header(mu.data)
        if h['module_count'] * model.fmt.ENTRY.size + h['strtab_size'] \
                < (1 << 20):
            mu.set_header_field('index_checksum',
                                index_checksum(model.fmt, mu.data, h))
        if h['seed_size'] < (1 << 20):
            mu.set_header_field('seed_checksum',
                                seed_checksum(model.fmt, mu.data, h))
        mu.note('index and seed checksums redone')
    mu.note('header_checksum redone' if forge else 'checksums left')
    data = model.fmt.set_header(bytes(mu.data)) if forge else bytes(mu.data)
    return data, mu.notes, 'any' if forge else 'baseline', 0


def mutate_index(rng, model):
    mu = Mutant(model)
    n = len(model.entries)
    for _ in range(rng.choice([1, 1, 1, 2])):
        i = pick_module(rng, model)
        op = rng.randrange(10)
        if op == 0 and n > 1:
            j = rng.randrange(n)
            a, b = model.entry_offset(i), model.entry_offset(j)
            es = model.fmt.ENTRY.size
            mu.data[b:b + es] = model.data[a:a + es]
            mu.note(f'entry {j} ({model.names[j]}) := entry {i} '
                    f'({model.names[i]})')
        elif op == 1 and n > 1:
            j = rng.randrange(n)
            a, b = model.entry_offset(i), model.entry_offset(j)
            es = model.fmt.ENTRY.size
            mu.data[a:a + es] = model.data[b:b + es]
            mu.data[b:b + es] = model.data[a:a + es]
            mu.note(f'entries {i} and {j} swapped')
        elif op == 2:
            bit = rng.randrange(8 * model.fmt.ENTRY.size)
            at = model.entry_offset(i) + bit // 8
            mu.data[at] ^= 1 << (bit % 8)
            mu.note(f'{model.names[i]}: flip bit {bit} of its entry')
        else:
            field = rng.choice(model.fmt.ENTRY_FIELDS)
            e = mu.entry(i)
            old = e[field]
            size = model.ef[field][1]
            r = rng.random()
            if field == 'code' and r < 0.5:
                pool = model.codes if rng.random() < 0.5 else model.objects
                new = rng.choice(pool)
            elif field == 'kind':
                new = rng.choice([0, 1, 2, 3, 255, 1 << 31])
            elif r < 0.3:
                other = model.entries[rng.randrange(n)]
                new = other[field]
            elif r < 0.45 and field.endswith(('_start', '_end')):
                new = rng.choice(list(model.entries[rng.randrange(n)].values())
                                 [2:])
            else:
                new = interesting(rng, old, size, model)
            mu.set_entry(i, field, new)
            mu.note(f'{model.names[i]}: {field} {old:#x} -> '
                    f'{new & ((1 << 8 * size) - 1):#x}')
    return finish_index(rng, mu)


def finish_index(rng, mu):
    """Most of the time, redo the index checksum of a mutated index or
    string table (so that the mutation reaches the checks behind it)."""
    forge = rng.random() < 0.8
    mu.index = forge
    mu.note('index_checksum redone' if forge else 'checksums left')
    return mu.finish(forge), mu.notes, 'any' if forge else 'baseline', 0


def mutate_strtab(rng, model):
    mu = Mutant(model)
    lo = model.h['strtab_offset']
    size = model.h['strtab_size']
    for _ in range(rng.choice([1, 1, 2, 3])):
        e = model.entries[pick_module(rng, model)]
        op = rng.randrange(6)
        if op == 0:
            at = lo + rng.randrange(size)
            mu.data[at] ^= 1 << rng.randrange(8)
            mu.note(f'flip a bit of strtab byte {at - lo:#x}')
        elif op in (1, 2):
            # a byte of a name: a NUL, a dot, a slash, invalid UTF-8
            at = lo + e['name_off'] + rng.randrange(max(1, e['name_len']))
            mu.data[at] = rng.choice(b'\x00./\xff\xc3\x80A_')
            mu.note(f'name byte {at - lo:#x} := {mu.data[at]:#x}')
        elif op == 3:
            # the NUL after a name or path
            at = lo + rng.choice([e['name_off'] + e['name_len'],
                                  e['path_off'] + e['path_len']])
            if at < lo + size:
                mu.data[at] = ord('x')
            mu.note(f'strtab terminator at {at - lo:#x} := "x"')
        elif op == 4 and e['path_len']:
            at = lo + e['path_off'] + rng.randrange(e['path_len'])
            mu.data[at] = rng.choice(b'\x00/.\xffz')
            mu.note(f'path byte {at - lo:#x} := {mu.data[at]:#x}')
        else:
            n = rng.randrange(1, 16)
            a = lo + rng.randrange(max(1, size - n))
            b = lo + rng.randrange(max(1, size - n))
            mu.data[b:b + n] = model.data[a:a + n]
            mu.note(f'strtab bytes {a - lo:#x}+{n} copied to {b - lo:#x}')
    return finish_index(rng, mu)


def mutate_records(rng, model):
    mu = Mutant(model)
    i = pick_module(rng, model)
    name = model.names[i]
    e = model.entries[i]
    words = model.relocs(model.data, e)
    fixups = list(model.fixup_lists[i])
    slots = [w & ~7 for w in words]
    objs = model.by_module.get(i, [])
    kinds = list(model.fmt.FIXUP_KINDS)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(14)
        if op < 7 and not words or op >= 7 and not fixups:
            continue
        k = rng.randrange(len(words)) if op < 7 else rng.randrange(len(fixups))
        if op == 0:
            j = rng.randrange(len(words))
            words[k] = words[j]
            mu.note(f'{name}: reloc {k} := reloc {j} (duplicate '
                    f'{model.describe(words[j] & ~7)})')
        elif op == 1 and k + 1 < len(words):
            words[k + 1] = words[k]
            mu.note(f'{name}: reloc {k + 1} := reloc {k} (adjacent duplicate '
                    f'{model.describe(words[k] & ~7)})')
        elif op == 2:
            j = rng.randrange(len(words))
            words[k], words[j] = words[j], words[k]
            mu.note(f'{name}: relocs {k} and {j} swapped')
        elif op == 3:
            words[k] ^= rng.choice([1, 2, 4, 6])
            mu.note(f'{name}: reloc {k} low bits -> {words[k] & 7}')
        elif op == 4:
            others = rng.choice([s for s in model.slots if s])
            dest = rng.choice([
                rng.randrange(model.fmt.PAGE), model.size,
                model.size + 8, M64 - 7, 1 << 63,
                rng.randrange(model.size) & ~7, rng.choice(others)[0]])
            words[k] = (dest & ~7) | (words[k] & 1)
            mu.note(f'{name}: reloc {k} moved to {dest:#x} '
                    f'({model.describe(dest)})')
        elif op == 5 and objs:
            t = rng.choice(objs)
            d = rng.choice([OB_REFCNT, OB_TYPE, OB_SIZE, -GC_HEAD, -8])
            words[k] = ((t + d) & ~7) | (words[k] & 1)
            mu.note(f'{name}: reloc {k} moved onto {model.describe(t + d)}')
        elif op == 6:
            d = rng.choice([8, -8, 16, -16])
            words[k] = (words[k] + d) & M64
            mu.note(f'{name}: reloc {k} off by {d} '
                    f'({model.describe(words[k] & ~7)})')
        elif op == 7:
            j = rng.randrange(len(fixups))
            fixups[k] = fixups[j]
            mu.note(f'{name}: fixup {k} := fixup {j}')
        elif op == 8:
            j = rng.randrange(len(fixups))
            fixups[k], fixups[j] = fixups[j], fixups[k]
            mu.note(f'{name}: fixups {k} and {j} swapped')
        elif op == 9:
            kind = rng.choice(kinds + [0, len(kinds) + 1, 255, 1 << 63])
            mu.note(f'{name}: fixup {k} kind {fixups[k][1]} -> {kind} at '
                    f'{model.describe(fixups[k][0])}')
            fixups[k] = (fixups[k][0], kind)
        elif op == 10:
            pool = [rng.choice(slots) if slots else 0,
                    rng.choice(objs) if objs else 0,
                    fixups[k][0] + rng.choice([8, -8, 4, 16]),
                    M64 - 7, M64 - 3, rng.randrange(model.size),
                    e['code'], e['code'] + OB_TYPE]
            off = rng.choice(pool) & M64
            kind = model.fmt.FIXUP_KINDS.get(fixups[k][1])
            mu.note(f'{name}: fixup {k} ({kind}) moved to '
                    f'{model.describe(off)}')
            fixups[k] = (off, fixups[k][1])
        elif op == 11:
            field = rng.choice(['reloc_count', 'reloc_start'])
            d = rng.choice([1, -1, 2, 1 << 20])
            mu.set_entry(i, field, e[field] + d)
            mu.note(f'{name}: {field} {d:+}')
        else:
            field = rng.choice(['fixup_count', 'fixup_start'])
            d = rng.choice([1, -1, 2])
            mu.set_entry(i, field, e[field] + d)
            mu.note(f'{name}: {field} {d:+}')
    if rng.random() < 0.5:
        words.sort()
        mu.note('relocation records sorted again')
    mu.set_relocs(i, words)
    mu.set_fixups(i, fixups)
    mu.modules.add(i)
    # Fixups are checked whatever slot they name ('default'); so are
    # relocation words not strictly ascending (when relocating).  Words
    # that pass those checks but apply elsewhere change what the slots
    # hold: the level of the slots whose words changed.
    after = model.relocs(mu.data, mu.entry(i))
    if all(a < b for a, b in zip(after, after[1:])):
        new, old = Counter(after), Counter(model.relocs(model.data, e))
        for w in (new - old) + (old - new):
            mu.cover(model.level_at(w & ~7))
    forge = rng.random() < 0.85
    mu.index = forge
    mu.note('checksums redone' if forge else 'checksums left')
    return (mu.finish(forge), mu.notes, 'any' if forge else 'baseline',
            mu.level if forge else 0)
