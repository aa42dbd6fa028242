/* pycds: structural checks of a module's objects before SHARE uses them.
 *
 * The checksums detect damage, not forgery: an archive with recomputed
 * checksums can point anywhere.  Before a module's fixups run (and so
 * before any of its objects is used), these checks make sure that what
 * the interpreter dereferences when it runs a code object lands where it
 * may.  The module's code objects (its own and, recursively, those among
 * their constants) are immortal code objects wholly inside the module's
 * code range, with no per-process state, a frame size and local counts
 * that agree with their local kinds; their tuples, bytes and strings are
 * immortal objects of the right type and size inside the module, the
 * shared strings or the interpreter's static objects (at an object's
 * start, not anywhere in the runtime); every name is a string and every
 * constant (at any depth) an immortal object of a type an archive holds,
 * in its place;
 * every FIXUP_FROZENSET targets a tuple of the module and every FIXUP_CODE
 * a code object.  They run after
 * relocation, whose bitmap marks slots inside the module's ranges only
 * (cds_prepare.c checks each bit as it applies it).
 *
 * -X cds_verify also checks that values are in CPython's canonical form
 * (strings of the narrowest kind, ints normalized), which equality and
 * hashing assume; a forged value in another form gives wrong answers, not
 * crashes.  Never checked (trusted as a .pyc file is): the bytecode, the
 * line and exception tables, and which values the constants have.
 *
 * Errors: each check returns the reason the module cannot be used, or
 * NULL; nothing raises.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_code.h"          // _PyCode_NBYTES()
#include "pycore_frame.h"         // FRAME_SPECIALS_SIZE
#include "pycore_gc.h"            // PyGC_Head
#include "pycore_long.h"          // _PyLong_DigitCount()
#include "pycore_object.h"        // _PyObject_VAR_SIZE()
#include "pycore_runtime.h"       // _PyRuntime
#include "cds_internal.h"

typedef struct {
    const _PyCDS_Map *map;
    const _PyCDS_View *view;     /* where the module's objects are */
    const cds_index_entry *entry;
    Py_ssize_t budget;           /* code objects left to visit */
    Py_ssize_t items;            /* nested constants left to visit */
    uintptr_t str_lo;            /* the shared strings (R_STR) */
    uint64_t str_size;
    const uint8_t *str_valid;    /* a bit per 16 bytes: a string there was
                                    checked well-formed (cds_share.c) */
    int deep;                    /* -X cds_verify: canonical values too */
    uintptr_t tail;              /* where the run-once code may start */
    int tail_kept;               /* something kept lies at or after it */
} checker;

/* As the dump wrote it: Py_INCREF() writes any other count, even one
   _Py_IsImmortal() accepts. */
static inline int
immortal(PyObject *op)
{
    return op->ob_refcnt == _Py_IMMORTAL_REFCNT;
}

/* -1 if 'op' is not in R_STR, else whether it is a checked shared string */
static inline int
shared_ok(const checker *c, const void *op)
{
    uint64_t d = (uint64_t)((uintptr_t)op - c->str_lo);
    if (d >= c->str_size) {
        return -1;
    }
    return d % CDS_ALIGN == 0
           && (c->str_valid[d / CDS_ALIGN / 8] >> ((d / CDS_ALIGN) & 7)) & 1;
}

/* Whether an object at 'p' of 'size' bytes lies in the module's range of
   region 'r', where objects start on CDS_ALIGN boundaries. */
static inline int
in_range(const checker *c, const void *p, uint64_t size, int r)
{
    /* the ranges do not overlap: only range r can hold 'p' */
    const uint64_t *range = c->entry->range[r - 1];
    uint64_t len = range[1] - range[0];
    uint64_t d = (uint64_t)((uintptr_t)p - (uintptr_t)c->view->at[r - 1]);
    return d < len && (range[0] + d) % CDS_ALIGN == 0 && size <= len - d;
}

/* The same in any of the module's ranges. */
static int
in_module(const checker *c, const void *p, uint64_t size)
{
    int r;
    uint64_t off = _PyCDS_ViewOffset(c->view, p, &r);
    return off != UINT64_MAX && off % CDS_ALIGN == 0
           && size <= c->entry->range[r][1] - off;
}

/* Whether 'p' is the start of one of the static objects an archive may
   point at: the singletons and the runtime's static objects (small ints,
   static strings, the empty tuple and bytes, one-byte bytes).  Not any
   address of the runtime: one inside an object is not an object. */
static int
is_static(const void *p)
{
    const char *a = p;
    const char *all = (const char *)&_PyRuntime.static_objects;
    if ((size_t)(a - all) >= sizeof(_PyRuntime.static_objects)) {
        return p == Py_None || p == Py_True || p == Py_False
               || p == Py_Ellipsis || p == Py_NotImplemented;
    }
    /* the static strings first: most static objects a module uses are
       identifiers.  They are of different sizes: a string's header, and
       all of it inside them. */
    const char *strs = (const char *)&_Py_SINGLETON(strings);
    const char *end = strs + sizeof(_Py_SINGLETON(strings));
    if (a >= strs && a < end) {
        const PyASCIIObject *s = p;
        if ((uintptr_t)a % sizeof(void *) != 0
            || (size_t)(end - a) < sizeof(PyASCIIObject)
            || Py_TYPE(s) != &PyUnicode_Type || !s->state.compact
            || !s->state.statically_allocated || s->state.kind != 1
            || s->length < 0 || s->length > end - a)
        {
            return 0;
        }
        size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                       : sizeof(PyCompactUnicodeObject);
        return header + (size_t)s->length + 1 <= (size_t)(end - a);
    }
    if (p == &_Py_SINGLETON(bytes_empty) || p == &_Py_SINGLETON(tuple_empty)) {
        return 1;
    }
    const char *ints = (const char *)_Py_SINGLETON(small_ints);
    if (a >= ints && a < ints + sizeof(_Py_SINGLETON(small_ints))) {
        return (size_t)(a - ints) % sizeof(PyLongObject) == 0;
    }
    const char *chars = (const char *)_Py_SINGLETON(bytes_characters);
    if (a >= chars && a < chars + sizeof(_Py_SINGLETON(bytes_characters))) {
        return (size_t)(a - chars)
               % sizeof(_Py_SINGLETON(bytes_characters)[0]) == 0;
    }
    return 0;
}

/* Whether the well-formed compact string 's' is in CPython's canonical
   form: the narrowest kind for its characters, ascii set exactly when
   they all are (str equality and hashing assume it). */
int
_PyCDS_CanonicalString(const PyASCIIObject *s)
{
    Py_UCS4 max = 0;
    const void *data = s->state.ascii ? (const void *)(s + 1)
                       : (const void *)((const PyCompactUnicodeObject *)s + 1);
    for (Py_ssize_t i = 0; i < s->length; i++) {
        Py_UCS4 ch = PyUnicode_READ(s->state.kind, data, i);
        max = ch > max ? ch : max;
    }
    switch (s->state.kind) {
        case 1:
            return s->state.ascii ? max < 0x80 : max >= 0x80;
        case 2:
            return max > 0xFF;
        default:
            return max > 0xFFFF && max <= 0x10FFFF;
    }
}

/* A str: a shared string, one of the module (R_WARM), or a static one. */
static int
str_ok(const checker *c, PyObject *op)
{
    int shared = shared_ok(c, op);
    if (shared >= 0) {
        return shared;
    }
    if (is_static(op)) {
        return Py_TYPE(op) == &PyUnicode_Type;
    }
    if (!in_range(c, op, sizeof(PyASCIIObject), R_WARM)
        || Py_TYPE(op) != &PyUnicode_Type || !immortal(op)
        || !PyUnicode_IS_COMPACT(op))
    {
        return 0;
    }
    PyASCIIObject *s = (PyASCIIObject *)op;
    int kind = s->state.kind;
    if (s->length < 0 || (kind != 1 && kind != 2 && kind != 4)
        || (s->state.ascii && kind != 1)
        || (uint64_t)s->length > c->map->size)
    {
        return 0;
    }
    uint64_t size = sizeof(PyASCIIObject);
    if (!s->state.ascii) {
        /* no UTF-8 cache before use: its pointer would be followed */
        PyCompactUnicodeObject *u = (PyCompactUnicodeObject *)op;
        if (!in_range(c, op, sizeof(*u), R_WARM) || u->utf8 != NULL
            || u->utf8_length != 0)
        {
            return 0;
        }
        size = sizeof(PyCompactUnicodeObject);
    }
    size += ((uint64_t)s->length + 1) * kind;
    return in_range(c, op, size, R_WARM)
           && (!c->deep || _PyCDS_CanonicalString(s));
}

/* A tuple or bytes object of the module (bytes are cold, tuples cold or
   in R_TUP) or a static one, with its items or data inside it. */
static int
var_ok(const checker *c, PyObject *op, PyTypeObject *type)
{
    int r = 0;
    /* (a tuple is in R_TUP when it holds shared strings, as most do) */
    if (type == &PyTuple_Type
        && in_range(c, op, sizeof(PyVarObject), R_TUP))
    {
        r = R_TUP;
    }
    else if (in_range(c, op, sizeof(PyVarObject), R_COLD)) {
        r = R_COLD;
    }
    else if (!is_static(op)) {
        return 0;
    }
    if (Py_TYPE(op) != type || Py_SIZE(op) < 0
        || (uint64_t)Py_SIZE(op) > c->map->size)
    {
        return 0;
    }
    if (r == 0) {
        return 1;
    }
    uint64_t size = (type == &PyTuple_Type)
                    ? _PyObject_VAR_SIZE(&PyTuple_Type, Py_SIZE(op))
                    : offsetof(PyBytesObject, ob_sval) + Py_SIZE(op) + 1;
    return immortal(op) && in_range(c, op, size, r);
}

static int code_ok(checker *c, PyCodeObject *co, int once);
static int const_ok(checker *c, PyObject *op);

/* Every item of the tuple 'op' (checked by var_ok()) a constant. */
static int
items_ok(checker *c, PyObject *op)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(op); i++) {
        if (!const_ok(c, PyTuple_GET_ITEM(op, i))) {
            return 0;
        }
    }
    return 1;
}

/* An immortal object of a type an archive holds, wholly in its place,
   and the items of a tuple, at any depth. */
static int
const_ok(checker *c, PyObject *op)
{
    int shared = shared_ok(c, op);
    if (shared >= 0) {
        return shared;
    }
    if (!in_module(c, op, sizeof(PyObject))) {
        return is_static(op);
    }
    if (!immortal(op) || --c->items < 0) {
        return 0;
    }
    PyTypeObject *t = Py_TYPE(op);
    if (t == &PyUnicode_Type) {
        return str_ok(c, op);
    }
    if (t == &PyTuple_Type) {
        return var_ok(c, op, t) && items_ok(c, op);
    }
    if (t == &PyBytes_Type) {
        return var_ok(c, op, t);
    }
    if (t == &PyCode_Type) {
        return code_ok(c, (PyCodeObject *)op, 0);
    }
    if (t == &PyLong_Type) {
        uint64_t head = offsetof(PyLongObject, long_value.ob_digit);
        Py_ssize_t n = _PyLong_DigitCount((PyLongObject *)op);
        if (!in_module(c, op, head + sizeof(digit))
            || !in_module(c, op, head + sizeof(digit) * (uint64_t)n))
        {
            return 0;
        }
        /* -X cds_verify: normalized, as equality and hashing assume */
        const digit *d = ((PyLongObject *)op)->long_value.ob_digit;
        if (c->deep && n > 0 && d[n - 1] == 0) {
            return 0;
        }
        for (Py_ssize_t i = 0; c->deep && i < n; i++) {
            if (d[i] >= PyLong_BASE) {
                return 0;
            }
        }
        return 1;
    }
    if (t == &PyFloat_Type) {
        return in_module(c, op, sizeof(PyFloatObject));
    }
    if (t == &PyComplex_Type) {
        return in_module(c, op, sizeof(PyComplexObject));
    }
    return 0;
}

/* Every item of the tuple 'op' (checked by var_ok()) a string. */
static int
names_ok(const checker *c, PyObject *op)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(op); i++) {
        PyObject *name = PyTuple_GET_ITEM(op, i);
        if (shared_ok(c, name) != 1 && !str_ok(c, name)) {
            return 0;
        }
    }
    return 1;
}

/* Its local kinds give its counts of locals, cells and free variables, as
   _PyCode_New() computes them. */
static int
locals_ok(PyCodeObject *co)
{
    const unsigned char *kinds =
        (const unsigned char *)PyBytes_AS_STRING(co->co_localspluskinds);
    int nlocals = 0, ncells = 0, nfree = 0;
    for (int i = 0; i < co->co_nlocalsplus; i++) {
        unsigned char k = kinds[i];
        if (k & CO_FAST_LOCAL) {
            nlocals++;
            ncells += (k & CO_FAST_CELL) != 0;
        }
        else if (k & CO_FAST_CELL) {
            ncells++;
        }
        else if (k & CO_FAST_FREE) {
            nfree++;
        }
        else {
            return 0;
        }
    }
    return nlocals == co->co_nlocals && ncells == co->co_ncellvars
           && nfree == co->co_nfreevars;
}

/* A code object of the module, with what running it dereferences, and
   the code objects among its constants.  'once': it is one of those SHARE
   serves as heap copies (the module's own, or a class body among the
   constants of such a one: _PyCDS_IsClassBody()), whose memory a copying
   process may reuse after the import; any other must lie before c->tail
   for that. */
static int
code_ok(checker *c, PyCodeObject *co, int once)
{
    if (--c->budget < 0) {
        return 0;       /* more visits than code objects: a cycle */
    }
    if (!in_range(c, co, sizeof(PyCodeObject), R_CODE)
        || Py_TYPE(co) != &PyCode_Type || !immortal((PyObject *)co)
        || Py_SIZE(co) <= 0 || (uint64_t)Py_SIZE(co) > c->map->size
        || !in_range(c, co, _PyObject_VAR_SIZE(&PyCode_Type, Py_SIZE(co)),
                     R_CODE)
        /* the per-process state starts empty (cds_builder.c) */
        || co->co_weakreflist != NULL || co->co_executors != NULL
        || co->_co_cached != NULL || co->_co_monitoring != NULL
        || co->co_extra != NULL || co->_co_instrumentation_version != 0
        || co->_co_firsttraceable < 0
        || co->_co_firsttraceable >= Py_SIZE(co))
    {
        return 0;
    }
    if (!var_ok(c, co->co_consts, &PyTuple_Type)
        || !var_ok(c, co->co_names, &PyTuple_Type)
        || !var_ok(c, co->co_localsplusnames, &PyTuple_Type)
        || !var_ok(c, co->co_localspluskinds, &PyBytes_Type)
        || !var_ok(c, co->co_linetable, &PyBytes_Type)
        || !var_ok(c, co->co_exceptiontable, &PyBytes_Type)
        || !str_ok(c, co->co_filename) || !str_ok(c, co->co_name)
        || !str_ok(c, co->co_qualname))
    {
        return 0;
    }
    if (!once && (uintptr_t)co + _PyObject_VAR_SIZE(&PyCode_Type,
                                                    Py_SIZE(co)) > c->tail) {
        c->tail_kept = 1;
    }
    /* the frame the interpreter allocates for it */
    int nlocalsplus = co->co_nlocalsplus;
    if (nlocalsplus != PyTuple_GET_SIZE(co->co_localsplusnames)
        || nlocalsplus != PyBytes_GET_SIZE(co->co_localspluskinds)
        || co->co_stacksize < 0 || co->co_stacksize > (1 << 24)
        || co->co_framesize != nlocalsplus + co->co_stacksize
                               + FRAME_SPECIALS_SIZE
        || !locals_ok(co)
        || co->co_argcount < 0 || co->co_argcount > co->co_nlocals
        || co->co_kwonlyargcount < 0
        || co->co_argcount + co->co_kwonlyargcount > co->co_nlocals)
    {
        return 0;
    }
    /* most names and many constants are shared strings: those inline */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *op = PyTuple_GET_ITEM(co->co_consts, i);
        if (shared_ok(c, op) == 1) {
            continue;
        }
        /* a class body of run-once code, as _PyCDS_CopyModuleCode() finds it */
        if (once && in_range(c, op, sizeof(PyCodeObject), R_CODE)
            && _PyCDS_IsClassBody(op))
        {
            if (--c->items < 0 || !code_ok(c, (PyCodeObject *)op, 1)) {
                return 0;
            }
        }
        else if (!const_ok(c, op)) {
            return 0;
        }
    }
    return names_ok(c, co->co_names) && names_ok(c, co->co_localsplusnames);
}

/* The fixups' targets: FIXUP_CODE records code objects; FIXUP_FROZENSET
   a tuple of the module of constants (PyFrozenSet_New() hashes them). */
static const char *
fixup_targets_ok(checker *c, const cds_fixup *fixups, uint64_t count)
{
    for (uint64_t k = 0; k < count; k++) {
        /* most are intern fixups, which cds_prepare.c checks itself */
        if (CDS_FIXUP_KIND(fixups[k]) == FIXUP_INTERN) {
            continue;
        }
        void *at = _PyCDS_ViewAddr(c->view, CDS_FIXUP_OFFSET(fixups[k]));
        if (CDS_FIXUP_KIND(fixups[k]) == FIXUP_CODE) {
            if (!in_range(c, at, sizeof(PyCodeObject), R_CODE)
                || Py_TYPE((PyObject *)at) != &PyCode_Type)
            {
                return "a code fixup does not target a code object "
                       "(corrupt archive)";
            }
            /* code watchers are told of it: it stays */
            if ((uintptr_t)at + sizeof(PyCodeObject) > c->tail) {
                c->tail_kept = 1;
            }
        }
        if (CDS_FIXUP_KIND(fixups[k]) == FIXUP_FROZENSET) {
            PyObject *t = *(PyObject **)at;
            if (!in_module(c, t, sizeof(PyVarObject))
                || !var_ok(c, t, &PyTuple_Type) || !items_ok(c, t))
            {
                return "a frozenset is malformed (corrupt archive)";
            }
        }
    }
    return NULL;
}

const char *
_PyCDS_VerifyModule(const _PyCDS_Map *map, const _PyCDS_View *view,
                    const cds_index_entry *e,
                    const cds_fixup *fixups, const uint8_t *str_valid,
                    int deep, uintptr_t tail, int *tail_free)
{
    const uint64_t *code_range = e->range[R_CODE - 1];
    uint64_t bytes = 0;
    for (int r = 0; r < CDS_NRANGES; r++) {
        bytes += e->range[r][1] - e->range[r][0];
    }
    checker c = {map, view, e,
                 (Py_ssize_t)((code_range[1] - code_range[0])
                              / sizeof(PyCodeObject)),
                 /* shared nested tuples are visited once per use */
                 (Py_ssize_t)(bytes / CDS_ALIGN * 4 + 64),
                 (uintptr_t)map->base + map->hdr->region_offset[R_STR],
                 map->hdr->region_size[R_STR], str_valid, deep,
                 tail, 0};
    /* every code object the module runs is reachable from its own */
    *tail_free = 0;
    if (!code_ok(&c, (PyCodeObject *)_PyCDS_ViewAddr(view, e->code), 1)) {
        return "a code object is malformed (corrupt archive)";
    }
    const char *bad = fixup_targets_ok(&c, fixups, e->fixup_count);
    *tail_free = (bad == NULL && !c.tail_kept);
    return bad;
}
