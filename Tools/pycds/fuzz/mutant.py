"""A mutated copy of the baseline archive (the checksums its changes break,
redone on request), and the value pickers every archive mutator uses."""

import bisect
import struct

from .model import M64, get, index_checksum, put, seed_checksum


class Mutant:
    """A mutable copy of the baseline archive, and the checksums to redo."""

    def __init__(self, model):
        self.m = model
        self.fmt = model.fmt
        self.data = bytearray(model.data)
        self.modules = set()       # entries whose checksums to redo
        self.index = False         # index_checksum to redo
        self.seed = False
        self.notes = []
        self.level = 0             # the weakest check covering a change

    def cover(self, level):
        self.level = max(self.level, level)

    def note(self, text):
        self.notes.append(text)

    def entry(self, i):
        return self.m.read_entry(self.data, i)

    def set_entry(self, i, field, value):
        off, size = self.m.ef[field]
        put(self.data, self.m.entry_offset(i) + off, value, size)
        self.index = True

    def header_field(self, field):
        off, size = self.m.hf[field]
        return get(self.data, off, size)

    def set_header_field(self, field, value):
        off, size = self.m.hf[field]
        put(self.data, off, value, size)

    # the records are written where they were: a changed reloc_start or
    # fixup_start then shifts the window the entry reads

    def set_relocs(self, i, records):
        """The module's bitmap with these records' slots (those no run of
        the module covers cannot be expressed and are left out)."""
        e = self.m.entries[i]
        start = self.m.h['reloc_offset'] + 8 * e['reloc_start']
        for k, w in enumerate(self.fmt.encode_relocations(e, records)):
            if start + 8 * k + 8 <= len(self.data):
                put(self.data, start + 8 * k, w)

    def set_fixups(self, i, records):
        e = self.m.entries[i]
        fx = self.fmt.FIXUP
        start = self.m.h['fixup_offset'] + fx.size * e['fixup_start']
        for k, (off, kind) in enumerate(records):
            at = start + fx.size * k
            if at + fx.size <= len(self.data):
                fx.pack_into(self.data, at, off & M64, kind & M64)

    def touch(self, off):
        """Note that the bytes at 'off' changed: redo the checksums that
        cover them (the owning module's, or those interning a shared
        string there, and the start-up strings')."""
        m = self.m.owner(off)
        if m is not None:
            self.modules.add(m)
        k = bisect.bisect_right(self.m.objects, off) - 1
        if k >= 0:
            t = self.m.objects[k]
            self.modules.update(self.m.interners.get(t, ()))
        h = self.m.h
        if h['str_offset'] <= off < h['str_offset'] + h['seed_size']:
            self.seed = True

    def finish(self, forge=True):
        """The archive's bytes; with 'forge', every checksum the changes
        broke is redone, as an attacker who read the format would."""
        if not forge:
            return bytes(self.data)
        fmt = self.fmt
        data = self.data
        changes = {}
        snapshot = bytes(data)      # what the module checksums cover
        for i in sorted(self.modules):
            e = self.entry(i)
            try:
                c = fmt.module_checksum(snapshot, e)
            except (KeyError, IndexError, ValueError, struct.error,
                    OverflowError, MemoryError):
                c = None        # a bogus fixup kind: refused before this
            if c is not None:
                self.set_entry(i, 'checksum', c)
            start = self.m.h['reloc_offset'] + 8 * e['reloc_start']
            n = min(e['reloc_count'], max(0, (len(data) - start) // 8))
            self.set_entry(i, 'reloc_checksum',
                           fmt.checksum(data[start:start + 8 * n]))
        h = fmt.read_header(data)
        if self.index:
            changes['index_checksum'] = index_checksum(fmt, data, h)
        if self.seed:
            changes['seed_checksum'] = seed_checksum(fmt, data, h)
        return fmt.set_header(bytes(data), **changes)


# -- value pickers ----------------------------------------------------------

def interesting(rng, current, size, model=None):
    """A value for an integer field of 'size' bytes now holding 'current'."""
    bits = 8 * size
    choices = [0, 1, -1, current + 1, current - 1, current + 8, current - 8,
               current + 16, current - 16, current * 2, current // 2,
               current ^ (1 << rng.randrange(bits)), 1 << (bits - 1),
               (1 << (bits - 1)) - 1, rng.getrandbits(bits),
               current + 4096, current - 4096, 0x7fffffff, 0x80000000]
    if model is not None and size == 8:
        choices += [model.size, model.size - 8, model.size + 4096,
                    model.base, model.base + model.size, M64 - 7]
    return rng.choice(choices) & ((1 << bits) - 1)


def pointer_value(rng, model, old, target_bit):
    """A new value for a pointer slot now holding 'old', and a note."""
    base = model.base
    objs = model.objects
    choice = rng.randrange(13)
    if choice == 0:
        t = rng.choice(objs)
        return base + t, f'another object ({model.describe(t)})'
    if choice == 1 and old - base in model.type_of:
        t = rng.choice(model.by_type[model.type_of[old - base]])
        return base + t, f'an object of the same type ({model.describe(t)})'
    if choice == 2 and model.strings:
        t = rng.choice(model.strings)
        return base + t, f'a string ({model.describe(t)})'
    if choice == 3:
        d = rng.choice([8, 16, 24, -8, -16, 1, 4, 40, 56])
        return old + d, f'off by {d}'
    if choice == 4:
        t = rng.randrange(model.size)
        t = t & ~7 if rng.random() < 0.8 else t
        return base + t, f'base + {t:#x} ({model.describe(t)})'
    if choice == 5:
        r = rng.choice(model.fmt.REGIONS)
        t = model.h[f'{r}_offset'] + rng.choice(
            [0, -8, -16, model.h[f'{r}_size'], model.h[f'{r}_size'] - 8])
        return base + t, f'{r} region edge {t:#x}'
    if choice == 6:
        t = rng.choice([model.size, model.size + 8, model.size + 4096,
                        model.size + (1 << 30), -8, -4096, -(1 << 30)])
        return base + t, f'outside the archive (base {t:+#x})'
    if choice == 7:
        return 0, 'NULL'
    if choice == 8:
        v = rng.choice([1 << 63, M64 - 7, M64, 0x7fffffffffff,
                        0xffff800000000000, 8, 4096])
        return v, f'{v:#x}'
    if choice == 9 and model.image_values:
        v = rng.choice(model.image_values)
        return v, f'an image object {v:#x}'
    if choice == 10 and target_bit == 1:
        d = rng.choice([8, -8, 16, -16, 64, 4096])
        return old + d, f'image pointer off by {d}'
    if choice == 11:
        t = get(model.data, old - base) if 0 <= old - base < model.size else 0
        return t, f'what it points to ({t:#x})'
    t = rng.choice(model.codes or objs)
    return base + t, f'a code object ({model.describe(t)})'


def pick_module(rng, model):
    if model.app_modules and rng.random() < 0.5:
        return rng.choice(model.app_modules)
    return rng.randrange(len(model.entries))
