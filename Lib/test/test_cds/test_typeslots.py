"""Class creation finds the same special methods as stock CPython.

pycds finds the special methods of a new class by reading the keys of the
dicts of its MRO once (Objects/typeobject.c, slot_lookup_init()) instead
of looking up every special method name in every dict of the MRO.  A class
whose dict has a key that is not an exact string takes the upstream path,
which walks the MRO: each class here is made both ways and must behave the
same.
"""

import itertools
import operator
import unittest


class WithAdd:
    def __add__(self, other):
        return ('add', other)


class WithEqOnly:
    def __eq__(self, other):
        return True


class WithHashNone:
    __hash__ = None


class WithGetitem:
    def __getitem__(self, i):
        if i > 2:
            raise IndexError(i)
        return i * 10


class WithCall:
    def __call__(self, *args):
        return ('call', args)


class WithGetattr:
    def __getattr__(self, name):
        return ('getattr', name)


class WithDescr:
    def __get__(self, obj, owner=None):
        return 'got'

    def __set__(self, obj, value):
        pass


class Subclass(WithAdd):
    pass


class Key(str):
    """A key of this type puts a class on upstream's path."""


BASES = [(object,), (int,), (str,), (bytes,), (list,), (dict,), (tuple,),
         (float,), (Exception,), (WithAdd,), (WithEqOnly,), (WithHashNone,),
         (WithGetitem,), (WithCall,), (WithGetattr,), (WithDescr,),
         (Subclass,), (WithEqOnly, WithAdd), (WithHashNone, WithGetitem),
         (WithGetattr, Subclass, WithCall), (WithDescr, int),
         (WithGetitem, list), (WithEqOnly, dict)]

# bodies: the special methods a class may define itself
BODIES = [
    {},
    {'__add__': lambda self, other: 'own add'},
    {'__radd__': lambda self, other: 'own radd'},
    {'__eq__': lambda self, other: False},
    {'__hash__': None},
    {'__hash__': lambda self: 42},
    {'__repr__': lambda self: 'own repr'},
    {'__len__': lambda self: 7},
    {'__getitem__': lambda self, i: [5, 6][i]},
    {'__iter__': lambda self: iter([1, 2])},
    {'__call__': lambda self, *a: 'own call'},
    {'__bool__': lambda self: False},
    {'__getattribute__': lambda self, name: 'own ' + name},
    {'__init__': lambda self, *a: None},
    {'__new__': lambda cls, *a: super(cls, cls).__new__(cls, *a)},
    {'__lt__': lambda self, other: 'lt', '__contains__': lambda self, x: True},
    {'__get__': lambda self, obj, owner=None: 'own get'},
    {'__index__': lambda self: 3, '__int__': lambda self: 4},
]

OPERATIONS = {
    'add': lambda x: x + x,
    'radd': lambda x: 1 + x,
    'eq': lambda x: x == x,
    'hash': lambda x: hash(x) == hash(x),
    'repr': lambda x: repr(x)[:8],
    'len': len,
    'getitem': lambda x: x[0],
    'iter': lambda x: list(itertools.islice(iter(x), 3)),
    'call': lambda x: x(),
    'bool': bool,
    'getattr': lambda x: x.missing_attribute,
    'lt': lambda x: x < x,
    'contains': lambda x: 1 in x,
    'index': operator.index,
    'int': int,
    'mul': lambda x: x * 2,
}


def outcome(x, operation):
    try:
        r = operation(x)
    except Exception as e:
        return ('raises', type(e))
    return ('returns', plain(r))


def plain(value):
    """'value' with objects other than numbers and strings as type names
    (a class made each way has instances of its own)."""
    if type(value) in (tuple, list):
        return type(value)(plain(v) for v in value)
    if type(value) in (int, bool, float, str):
        return value
    return type(value).__name__


def instance(cls):
    for args in ((), (1,), ('a',)):
        try:
            return cls(*args)
        except Exception:
            pass
    return None


class ClassCreationTests(unittest.TestCase):

    def test_same_slots_as_the_mro_walk(self):
        for base in BASES:
            for i, body in enumerate(BODIES):
                names = [b.__name__ for b in base]
                with self.subTest(bases=names, body=i):
                    try:
                        fast = type('C', base, dict(body))
                    except TypeError:
                        continue
                    # a key that is not an exact string: upstream's walk
                    slow = type('C', base, {**body, Key('slow'): None})
                    a, b = instance(fast), instance(slow)
                    self.assertEqual(a is None, b is None)
                    if a is None:
                        continue
                    for name, operation in OPERATIONS.items():
                        self.assertEqual(outcome(a, operation),
                                         outcome(b, operation), name)

    def test_later_assignment_updates_the_slots(self):
        class Base:
            pass

        class Child(Base):
            pass
        with self.assertRaises(TypeError):
            Child() + 1
        Base.__add__ = lambda self, other: 'added'
        self.assertEqual(Child() + 1, 'added')
        Child.__add__ = lambda self, other: 'child'
        self.assertEqual(Child() + 1, 'child')
        del Base.__add__
        self.assertEqual(Child() + 1, 'child')

    def test_slot_wrapper_inherited_from_a_builtin(self):
        class MyInt(int):
            pass

        class MyInt2(MyInt):
            __hash__ = None
        self.assertEqual(MyInt(3) + 4, 7)
        self.assertIs(type(MyInt(3) + 4), int)
        self.assertEqual(hash(MyInt(5)), 5)
        with self.assertRaises(TypeError):
            hash(MyInt2(5))

    def test_key_not_interned(self):
        # an equal name that is not the interned string finds the same
        # method as the interned one would
        name = ''.join(['__', 'add', '__'])
        C = type('C', (), {name: lambda self, other: 'not interned'})
        self.assertEqual(C() + 1, 'not interned')


if __name__ == '__main__':
    unittest.main()
