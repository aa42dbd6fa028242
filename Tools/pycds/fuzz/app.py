"""The application the fuzzer traces, dumps and runs on each mutation."""

from test.test_cds.util import APP_FILES

# The application.  Its output is deterministic (no hash order, paths
# replaced); at exit it writes _cds.info() to stderr, which tells served
# from refused.  No name or path here contains "cds": a traceback that
# does is about the interpreter's archive code.
APP = {
    'fzapp/__init__.py': '''
        """The application the pycds fuzzer runs."""
        from fzapp import consts, shapes, flow
        VERSION = (0, 3)
    ''',
    # the test application's constants (every type an archive holds),
    # with a dict, one more frozenset item and a function that reads it
    'fzapp/consts.py': APP_FILES['cdsapp/consts.py'].replace(
        '...))))\n', '...))))\n'
        '        TABLE = {"alpha": 1, "beta": 2, "gamma": 3, "\\xe9t\\xe9": 4}\n'
    ).replace('42, (1, 2)}', '42, (1, 2), 2.5}') + '''
        def lookup(key):
            return TABLE.get(key, -1)
    ''',
    'fzapp/shapes.py': '''
        import math

        class Meta(type):
            registry = []

            def __new__(mcls, name, bases, ns, **kw):
                cls = super().__new__(mcls, name, bases, ns)
                mcls.registry.append(name)
                return cls

            def __repr__(cls):
                return f"<Meta {cls.__qualname__}>"

        class Shape(metaclass=Meta):
            sides = 0
            __slots__ = ("name",)

            def __init__(self, name="shape"):
                self.name = name

            def describe(self):
                return f"{type(self).__name__} {self.name!r}: {self.sides}"

            def größe(self):
                return self.sides * 1.5

        class Square(Shape):
            sides = 4
            __slots__ = ("side",)

            def __init__(self, side):
                super().__init__("square")
                self.side = side

            @property
            def area(self):
                return self.side ** 2

            @staticmethod
            def unit():
                return Square(1)

            @classmethod
            def of(cls, n):
                return [cls(i) for i in range(n)]

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def norm(self):
                return math.hypot(self.x, self.y)

            def __repr__(self):
                return f"Point({self.x:.2f}, {self.y:>4})"

        def make_adder(n):
            def add(x):
                return x + n
            return add

        def report():
            sq = Square(3)
            return [
                repr((sq.describe(), sq.area, sq.größe(), Square.unit().area,
                      [s.area for s in Square.of(4)])),
                repr((Point(3, 4), Point(3, 4).norm(), make_adder(5)(10))),
                repr((Square, sorted(Meta.registry))),
            ]
    ''',
    'fzapp/flow.py': '''
        def fail(depth=0):
            if depth == 3:
                raise ValueError(f"boom at depth {depth}")
            return fail(depth + 1)

        def counter():
            count = 0
            def step(by=1):
                nonlocal count
                count += by
                return count
            return step

        def gen(n):
            for i in range(n):
                if i % 2:
                    yield i * i
                else:
                    yield -i

        def kinds(a, b=2, /, c=3, *args, d, e=5, **kw):
            return (a, b, c, args, d, e, sorted(kw.items()))

        def matcher(value):
            match value:
                case {"x": x, "y": y}:
                    return f"point {x},{y}"
                case [first, *rest]:
                    return f"seq {first} +{len(rest)}"
                case str() as s if s.isidentifier():
                    return f"name {s!r}"
                case _:
                    return "other"

        class Resource:
            def __init__(self, log):
                self.log = log

            def __enter__(self):
                self.log.append("enter")
                return self

            def __exit__(self, *exc):
                self.log.append(f"exit {exc[0].__name__ if exc[0] else None}")
                return True

        async def twice(x):
            return x * 2

        def run(coro):
            try:
                coro.send(None)
            except StopIteration as e:
                return e.value

        def report():
            step = counter()
            log = []
            with Resource(log):
                log.append(step(5))
                raise KeyError("swallowed")
            try:
                try:
                    1 / 0
                finally:
                    log.append("finally")
            except ZeroDivisionError as exc:
                log.append(type(exc).__name__)
            squares = {i: [j for j in range(i) if j % 2] for i in range(6)}
            fns = [lambda x, i=i: x + i for i in range(3)]
            return [
                repr(list(gen(7))),
                repr(kinds(1, d=4, z=26)),
                repr([matcher(v) for v in ({"x": 1, "y": 2}, [1, 2, 3],
                                           "ident", 3.5)]),
                repr((log, step(), step(2))),
                repr((squares, [f(10) for f in fns], run(twice(21)))),
                f"{'nested ' + f'{3.14159:.3f}'!r:>20}|{len(squares):#x}",
            ]
    ''',
    'main.py': '''
        import json, os, sys, traceback, _weakref
        import fzapp
        from fzapp import consts, shapes, flow

        HERE = os.path.dirname(os.path.abspath(__file__))

        def clean(text):
            return text.replace(HERE, "<app>").replace(sys.prefix, "<prefix>")

        out = []
        out.append(repr((consts.BIG, consts.NEG, consts.SMALL, consts.FLOATS,
                         consts.COMPLEX, consts.DATA, consts.LATIN1,
                         consts.UCS2, consts.UCS4, consts.ÄNDERUNG,
                         consts.EMPTY, consts.NESTED, fzapp.VERSION)))
        out.append(f"{consts.LATIN1} {consts.UCS2} {consts.UCS4}")
        # the archived strings themselves through the UTF-8 encoder
        out.append(repr([s.encode() for s in (consts.LATIN1, consts.UCS2,
                                              consts.UCS4, consts.ÄNDERUNG)]))
        out.append(consts.LATIN1)
        out.append(repr([consts.member(v)
                         for v in ("alpha", "delta", 42, (1, 2), 2.5, 7)]))
        out.append(repr([consts.keyword(w) for w in ("if", "for")]))
        out.append(repr([consts.lookup("".join(p))
                         for p in (("al", "pha"), ("\\xe9", "t\\xe9"))]))
        out.extend(shapes.report())
        out.extend(flow.report())
        try:
            flow.fail()
        except ValueError:
            out.append(clean(traceback.format_exc()))
        for f in (consts.member, shapes.make_adder, shapes.make_adder(1),
                  flow.fail, shapes.Square.describe, flow.counter()):
            co = f.__code__
            out.append(repr((co.co_name, co.co_qualname, co.co_varnames,
                             co.co_cellvars, co.co_freevars, co.co_argcount,
                             len(co.co_code), co.co_firstlineno,
                             [line for _, _, line in co.co_lines()][:4],
                             _weakref.ref(co)() is co)))
        out.append(repr(sorted(n for n in vars(consts) if n[0] != "_")))
        out.append(json.dumps({"k": [1, 2.5, None, "\\xe9"]}, sort_keys=True))
        print("\\n".join(out))
        try:
            import _cds
            info = _cds.info()
        except ImportError:
            info = {}
        sys.stderr.write("FZINFO " + json.dumps(info) + "\\n")
    ''',
}
