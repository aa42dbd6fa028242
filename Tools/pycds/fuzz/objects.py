"""The mutators of the structural fields of one module's objects: pointer
slots, object headers, strings and the code object fields the
interpreter derives (never what a .pyc also carries: trusted content)."""

from .model import (CODE_FIELDS, GC_HEAD, M64, OB_REFCNT, OB_SIZE, OB_TYPE,
                    ST_ASCII, ST_COMPACT, ST_INTERNED, ST_KIND_SHIFT,
                    ST_STATIC, STR_HASH, STR_LENGTH, STR_STATE, STR_UTF8,
                    STR_UTF8_LENGTH, code_int, get, put)
from .mutant import Mutant, interesting, pick_module, pointer_value


def mutate_slot(rng, mu, i):
    model = mu.m
    slots = model.slots[i]
    if not slots:
        return False
    s, bit = rng.choice(slots)
    old = get(mu.data, s)
    new, how = pointer_value(rng, model, old, bit)
    put(mu.data, s, new)
    mu.touch(s)
    mu.cover(model.level_at(s))
    if (model.is_constant_item(s) and new - model.base in model.type_of
            and model.owner(new - model.base) in (i, None)):
        # another whole object of the module (or a shared string) as a
        # constant: which object a constant is, is content, trusted as a
        # .pyc's constants are (a str where code expects a tuple of
        # defaults crashes stock CPython too)
        mu.cover(2)
    mu.note(f'slot {model.describe(s)} ({"image" if bit else "archive"}) '
            f'{old:#x} -> {how}')
    return True


def mutate_object_header(rng, mu, i):
    model = mu.m
    objs = model.by_module.get(i)
    if not objs:
        return False
    t = rng.choice(objs)
    what = model.describe(t)
    tname = model.type_names.get(model.type_of[t], 'object')
    mu.cover(model.obj_level.get(t, 0))
    field = rng.choice(['refcnt', 'type', 'type', 'size', 'size', 'gc'])
    if field == 'refcnt':
        new = rng.choice([0, 1, 2, 0x7fffffff, 0x7ffffffe, 0xfffffffe,
                          0x80000000, 1 << 32])
        put(mu.data, t + OB_REFCNT, new)
        mu.note(f'{what}: ob_refcnt := {new:#x}')
    elif field == 'type':
        old = get(mu.data, t + OB_TYPE)
        pool = [v for v in model.type_names if v != old] or [old]
        new = rng.choice([rng.choice(pool), rng.choice(pool),
                          rng.choice(model.image_values or [0]),
                          old + 8, old - 8, 0,
                          model.base + rng.choice(model.objects)])
        put(mu.data, t + OB_TYPE, new)
        mu.note(f'{what}: ob_type {old:#x} -> {new:#x} '
                f'({model.type_names.get(new, "?")})')
    elif field == 'size':
        old = get(mu.data, t + OB_SIZE)
        new = interesting(rng, old, 8)
        if ((tname == 'code' and 0 < new <= old)
                or (t in model.operand_tables and 0 <= new < old)):
            # a shorter bytecode, or fewer constants or names than the
            # bytecode's operands index, as in a .pyc cut that way: the
            # bytecode is trusted content, its operands are not checked
            # against the tables (only a size that leaves the object, or
            # a code size of 0, is)
            mu.cover(2)
        put(mu.data, t + OB_SIZE, new)
        mu.note(f'{what}: word at +16 (ob_size) {old:#x} -> {new:#x}')
    else:
        if tname != 'tuple':
            return False
        new = rng.choice([1, 8, model.base + t, 1 << 63, M64, 2, 3])
        at = t - GC_HEAD + rng.choice([0, 8])
        put(mu.data, at, new)
        mu.note(f'{what}: GC header word at {at - t} := {new:#x}')
    mu.touch(t)
    return True


def mutate_string(rng, mu, t):
    """A structural field of the string at 't'; whether the program must
    still give its baseline output (fields the reader resets)."""
    model = mu.m
    what = model.describe(t)
    mu.cover(model.obj_level.get(t, 0))
    state = get(mu.data, t + STR_STATE, 4)
    ascii = state & ST_ASCII
    op = rng.choice(['hash', 'hash', 'interned', 'kind', 'ascii', 'compact',
                     'static', 'bit', 'length', 'utf8', 'utf8'])
    shared = model.region_of(t) == 'str'
    if op == 'hash':
        new = rng.choice([0, 1, 2, -2, rng.getrandbits(64),
                          get(mu.data, rng.choice(model.strings) + STR_HASH)])
        put(mu.data, t + STR_HASH, new)
        mu.note(f'{what}: cached hash := {new & M64:#x}')
        return shared
    if op == 'length':
        old = get(mu.data, t + STR_LENGTH)
        new = interesting(rng, old, 8)
        put(mu.data, t + STR_LENGTH, new)
        mu.note(f'{what}: length {old} -> {new:#x}')
        return False
    if op == 'utf8' and not ascii:
        # the UTF-8 cache: its pointer, its length, or both (a pointer
        # with a zero length reads nothing)
        which = rng.choice(['utf8', 'utf8_length', 'both'])
        if which != 'utf8_length':
            o = rng.choice(model.strings)
            new = rng.choice([model.base + o + model.fmt.ASCII_HEADER,
                              model.base + rng.randrange(model.size), 16,
                              M64 - 15, model.base + model.size])
            put(mu.data, t + STR_UTF8, new)
            mu.note(f'{what}: utf8 := {new:#x}')
        if which != 'utf8':
            new = rng.choice([1, 8, 64, 4096, 1 << 31, M64,
                              get(mu.data, t + STR_LENGTH) + 1])
            put(mu.data, t + STR_UTF8_LENGTH, new)
            mu.note(f'{what}: utf8_length := {new:#x}')
        return False
    if op == 'interned':
        new = (state & ~ST_INTERNED) | rng.choice([1, 2, 3])
        put(mu.data, t + STR_STATE, new, 4)
        mu.note(f'{what}: state.interned := {new & 3}')
        return shared
    if op == 'kind':
        kind = rng.choice([0, 1, 2, 3, 4, 5, 7])
        new = (state & ~(7 << ST_KIND_SHIFT)) | (kind << ST_KIND_SHIFT)
        mu.note(f'{what}: state.kind := {kind}')
    elif op == 'ascii' or op == 'utf8':
        new = state ^ ST_ASCII
        mu.note(f'{what}: state.ascii flipped')
    elif op == 'compact':
        new = state & ~ST_COMPACT
        mu.note(f'{what}: state.compact := 0')
    elif op == 'static':
        new = state & ~ST_STATIC
        mu.note(f'{what}: state.statically_allocated := 0')
    else:
        bit = rng.randrange(32)
        new = state ^ (1 << bit)
        mu.note(f'{what}: state bit {bit} flipped')
    put(mu.data, t + STR_STATE, new, 4)
    return False


def mutate_code(rng, mu, i):
    model = mu.m
    codes = [t for t in model.by_module.get(i, ())
             if model.type_of[t] == model.types['code']]
    if not codes or not model.code_layout:
        return False
    c = rng.choice(codes)
    what = model.describe(c)
    op = rng.randrange(5)
    if op == 0:
        name = rng.choice([n for n, f in CODE_FIELDS.items()
                           if f[2] == 'derived'])
        off, size, _ = CODE_FIELDS[name]
        old = get(mu.data, c + off, size, True)
        other = get(mu.data, rng.choice(model.codes) + off, size)
        new = rng.choice([interesting(rng, old, size), other, old + 1,
                          old - 1, 0, -1])
        put(mu.data, c + off, new, size)
        mu.note(f'{what}: {name} {old} -> {new}')
    elif op == 1:
        name = rng.choice([n for n, f in CODE_FIELDS.items()
                           if f[2] == 'runtime'])
        off, size, _ = CODE_FIELDS[name]
        new = rng.choice([1, 8, model.base + rng.choice(model.objects),
                          model.base + rng.randrange(model.size), M64,
                          rng.choice(model.image_values or [16])])
        put(mu.data, c + off, new, size)
        mu.note(f'{what}: {name} := {new:#x}')
    elif op == 2:
        # the locals, consistently: frame size and count agree, the
        # tuple and bytes of names and kinds do not (or do)
        d = rng.choice([1, -1, 2, 8, -2])
        for name in ('co_nlocalsplus', 'co_framesize'):
            put(mu.data, c + CODE_FIELDS[name][0],
                code_int(mu.data, c, name) + d, 4)
        resized = []
        for name in ('co_localsplusnames', 'co_localspluskinds'):
            t = get(mu.data, c + CODE_FIELDS[name][0]) - model.base
            if model.owner(t) == i and rng.random() < 0.6:
                put(mu.data, t + OB_SIZE, get(mu.data, t + OB_SIZE) + d)
                mu.touch(t)
                resized.append(name)
        mu.note(f'{what}: co_nlocalsplus and co_framesize {d:+}'
                f'{", sizes of " + " and ".join(resized) if resized else ""}')
    elif op == 3:
        # a tuple the bytecode indexes, shorter or longer than it needs
        name = rng.choice(['co_consts', 'co_names', 'co_localsplusnames'])
        t = get(mu.data, c + CODE_FIELDS[name][0]) - model.base
        if model.owner(t) != i:
            return False
        old = get(mu.data, t + OB_SIZE)
        new = rng.choice([old - 1, old - 2, 0, old + 1, old + 8, 1 << 40])
        put(mu.data, t + OB_SIZE, new)
        mu.touch(t)
        mu.note(f'{what}: {name} tuple size {old} -> {new}')
    else:
        # the frame size alone, or with the stack size it implies
        old = code_int(mu.data, c, 'co_framesize')
        new = rng.choice([old + 1, old - 1, 0, -1, 1 << 30, old * 4])
        put(mu.data, c + CODE_FIELDS['co_framesize'][0], new, 4)
        mu.note(f'{what}: co_framesize {old} -> {new}')
    mu.touch(c)
    return True


def mutate_objects(rng, model):
    mu = Mutant(model)
    done = 0
    harmless = True     # only fields the reader resets were changed
    for _ in range(rng.choice([1, 1, 1, 1, 2, 3])):
        i = pick_module(rng, model)
        op = rng.choice(['slot', 'slot', 'slot', 'header', 'header', 'str',
                         'str', 'code', 'code', 'seed'])
        if op == 'slot':
            changed = mutate_slot(rng, mu, i)
        elif op == 'header':
            changed = mutate_object_header(rng, mu, i)
        elif op == 'code':
            changed = mutate_code(rng, mu, i)
        elif not model.str_layout:
            changed = False
        else:
            if op == 'seed' and model.seed:
                t = rng.choice(model.seed)
            else:
                own = [t for t in model.by_module.get(i, ())
                       if model.type_of[t] == model.types.get('str')]
                shared = [t for t, ms in model.interners.items() if i in ms]
                if not own + shared:
                    continue
                t = rng.choice(own + shared)
            if mutate_string(rng, mu, t):
                done += 1
                mu.touch(t)
                continue
            mu.touch(t)
            changed = True
        if changed:
            done += 1
            harmless = False
    if not done:
        mutate_slot(rng, mu, rng.choice([m for m, s in enumerate(model.slots)
                                         if s]))
        harmless = False
    # Forged, only the fields documented as reset leave the output as it
    # was; damaged (no checksum redone), the checksums must catch the
    # rest, so the output must be the baseline either way.
    forge = rng.random() < 0.9
    mu.note('checksums redone' if forge else 'checksums left')
    expect = 'baseline' if harmless or not forge else 'any'
    return mu.finish(forge), mu.notes, expect, mu.level if forge else 0
