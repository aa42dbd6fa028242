/* pycds: structural checks of a module's objects before SHARE uses them.
 *
 * The checksums detect damage, not forgery: an archive with recomputed
 * checksums can point anywhere.  Before a module's fixups run (and so
 * before any of its objects is used), these checks make sure that what
 * the interpreter dereferences when it runs a code object lands where it
 * may: the module's code objects (its own and, recursively, those among
 * their constants) are code objects wholly inside the module's code range, with their tuples, bytes
 * and strings of the right type and size inside the module, the shared
 * strings or the interpreter image, consistent frame sizes, and constants
 * of the types an archive holds; every FIXUP_FROZENSET targets a tuple of
 * the module.  They run after relocation, so a relocation record applied
 * twice to a checked field shows as a pointer or type out of place (the
 * records themselves are not checked for duplicates).
 *
 * By default the items of the names tuples and constants other than code
 * objects are not checked one by one (that costs a few percent of a
 * start-up); -X cds_verify checks them too: each name a string, each
 * constant of a type an archive holds, in its place.  Never checked
 * (trusted as a .pyc file is): the bytecode itself, and constants nested
 * in constant tuples.
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
    const cds_index_entry *entry;
    Py_ssize_t budget;           /* code objects left to visit */
    uintptr_t str_lo;            /* the shared strings (R_STR) */
    uint64_t str_size;
    const uint8_t *str_valid;    /* a bit per 16 bytes: a string there was
                                    checked well-formed (cds_share.c) */
    int deep;                    /* -X cds_verify: every item too */
} checker;

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

/* Whether [p, p + size) lies in the module's range of region 'r'. */
static int
in_range(const checker *c, const void *p, uint64_t size, int r)
{
    uint64_t off = (uint64_t)((const char *)p - c->map->base);
    const uint64_t *range = c->entry->range[r - 1];
    return (const char *)p >= c->map->base && off >= range[0]
           && off <= range[1] && size <= range[1] - off;
}

/* Whether [p, p + size) lies in the module's own objects. */
static int
in_module(const checker *c, const void *p, uint64_t size)
{
    return (const char *)p >= c->map->base
           && _PyCDS_InModule(c->entry,
                              (uint64_t)((const char *)p - c->map->base), size);
}

/* The static objects an archive may point at: the runtime's static
   objects (small ints, static strings, empty tuple and bytes) and the
   singletons.  Not any address of the image: it has unmapped gaps. */
static int
is_static(const checker *c, const void *p, uint64_t size)
{
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)&_PyRuntime;
    uintptr_t hi = lo + sizeof(_PyRuntime);
    return (a >= lo && a <= hi && size <= hi - a)
           || p == Py_None || p == Py_True || p == Py_False
           || p == Py_Ellipsis || p == Py_NotImplemented;
}

/* A str: a shared string, one of the module (R_WARM), or a static one. */
static int
str_ok(const checker *c, PyObject *op)
{
    int shared = shared_ok(c, op);
    if (shared >= 0) {
        return shared;
    }
    int own = in_range(c, op, sizeof(PyASCIIObject), R_WARM);
    if (!own && !is_static(c, op, sizeof(PyASCIIObject))) {
        return 0;
    }
    if (Py_TYPE(op) != &PyUnicode_Type || !PyUnicode_IS_COMPACT(op)) {
        return 0;
    }
    PyASCIIObject *s = (PyASCIIObject *)op;
    int kind = s->state.kind;
    uint64_t size = (s->state.ascii ? sizeof(PyASCIIObject)
                                    : sizeof(PyCompactUnicodeObject));
    if (s->length < 0 || (kind != 1 && kind != 2 && kind != 4)
        || (uint64_t)s->length > c->map->size)
    {
        return 0;
    }
    size += ((uint64_t)s->length + 1) * kind;
    return own ? in_range(c, op, size, R_WARM) : is_static(c, op, size);
}

/* A tuple or bytes object of the module (bytes are cold, tuples cold or
   in R_TUP) or a static one, with its items or data inside it. */
static int
var_ok(const checker *c, PyObject *op, PyTypeObject *type)
{
    int r = 0;
    if (in_range(c, op, sizeof(PyVarObject), R_COLD)) {
        r = R_COLD;
    }
    else if (type == &PyTuple_Type
             && in_range(c, op, sizeof(PyVarObject), R_TUP))
    {
        r = R_TUP;
    }
    else if (!is_static(c, op, sizeof(PyVarObject))) {
        return 0;
    }
    if (Py_TYPE(op) != type || Py_SIZE(op) < 0
        || (uint64_t)Py_SIZE(op) > c->map->size)
    {
        return 0;
    }
    uint64_t size = (type == &PyTuple_Type)
                    ? _PyObject_VAR_SIZE(&PyTuple_Type, Py_SIZE(op))
                    : offsetof(PyBytesObject, ob_sval) + Py_SIZE(op) + 1;
    return r ? in_range(c, op, size, r) : is_static(c, op, size);
}

static int code_ok(checker *c, PyCodeObject *co);

static int
const_ok(checker *c, PyObject *op)
{
    int shared = shared_ok(c, op);
    if (shared >= 0) {
        return shared;
    }
    if (is_static(c, op, sizeof(PyObject))) {
        return 1;
    }
    if (!in_module(c, op, sizeof(PyObject))) {
        return 0;
    }
    PyTypeObject *t = Py_TYPE(op);
    if (t == &PyUnicode_Type) {
        return str_ok(c, op);
    }
    if (t == &PyTuple_Type || t == &PyBytes_Type) {
        return var_ok(c, op, t);
    }
    if (t == &PyCode_Type) {
        return code_ok(c, (PyCodeObject *)op);
    }
    if (t == &PyLong_Type) {
        uint64_t head = offsetof(PyLongObject, long_value.ob_digit);
        return in_module(c, op, head + sizeof(digit))
               && in_module(c, op, head + sizeof(digit)
                            * (uint64_t)_PyLong_DigitCount((PyLongObject *)op));
    }
    if (t == &PyFloat_Type) {
        return in_module(c, op, sizeof(PyFloatObject));
    }
    if (t == &PyComplex_Type) {
        return in_module(c, op, sizeof(PyComplexObject));
    }
    return 0;
}

/* A code object of the module, with what running it dereferences, and
   the code objects among its constants. */
static int
code_ok(checker *c, PyCodeObject *co)
{
    if (--c->budget < 0) {
        return 0;       /* more visits than code objects: a cycle */
    }
    if (!in_range(c, co, sizeof(PyCodeObject), R_CODE)
        || Py_TYPE(co) != &PyCode_Type || Py_SIZE(co) < 0
        || (uint64_t)Py_SIZE(co) > c->map->size
        || !in_range(c, co, _PyObject_VAR_SIZE(&PyCode_Type, Py_SIZE(co)),
                     R_CODE))
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
    /* the frame the interpreter allocates for it */
    int nlocalsplus = co->co_nlocalsplus;
    if (nlocalsplus != PyTuple_GET_SIZE(co->co_localsplusnames)
        || nlocalsplus != PyBytes_GET_SIZE(co->co_localspluskinds)
        || co->co_stacksize < 0 || co->co_stacksize > (1 << 24)
        || co->co_framesize != nlocalsplus + co->co_stacksize
                               + FRAME_SPECIALS_SIZE
        || co->co_nlocals < 0 || co->co_nlocals > nlocalsplus
        /* an argument that is a cell counts in both co_nlocals and
           co_ncellvars: each is bounded, not their sum */
        || co->co_ncellvars < 0 || co->co_ncellvars > nlocalsplus
        || co->co_nfreevars < 0 || co->co_nfreevars > nlocalsplus
        || co->co_argcount < 0 || co->co_argcount > co->co_nlocals
        || co->co_kwonlyargcount < 0
        || co->co_argcount + co->co_kwonlyargcount > co->co_nlocals)
    {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *item = PyTuple_GET_ITEM(co->co_consts, i);
        if (c->deep) {
            if (!const_ok(c, item)) {
                return 0;
            }
        }
        else if (in_range(c, item, sizeof(PyObject), R_CODE)
                 && !code_ok(c, (PyCodeObject *)item))
        {
            /* the code objects the module runs are all reachable */
            return 0;
        }
    }
    if (!c->deep) {
        return 1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_names); i++) {
        if (!str_ok(c, PyTuple_GET_ITEM(co->co_names, i))) {
            return 0;
        }
    }
    for (Py_ssize_t i = 0; i < nlocalsplus; i++) {
        if (!str_ok(c, PyTuple_GET_ITEM(co->co_localsplusnames, i))) {
            return 0;
        }
    }
    return 1;
}

const char *
_PyCDS_VerifyModule(const _PyCDS_Map *map, const cds_index_entry *e,
                    const cds_fixup *fixups, const uint8_t *str_valid,
                    int deep)
{
    const uint64_t *code_range = e->range[R_CODE - 1];
    checker c = {map, e,
                 (Py_ssize_t)((code_range[1] - code_range[0])
                              / sizeof(PyCodeObject)),
                 (uintptr_t)map->base + map->hdr->region_offset[R_STR],
                 map->hdr->region_size[R_STR], str_valid, deep};
    /* every code object the module runs is reachable from its own */
    if (!code_ok(&c, (PyCodeObject *)(map->base + e->code))) {
        return "a code object is malformed (corrupt archive)";
    }
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        void *at = map->base + fixups[k].offset;
        if (fixups[k].kind == FIXUP_CODE
            && (!in_range(&c, at, sizeof(PyCodeObject), R_CODE)
                || Py_TYPE((PyObject *)at) != &PyCode_Type))
        {
            return "a code fixup does not target a code object "
                   "(corrupt archive)";
        }
        if (fixups[k].kind == FIXUP_FROZENSET
            && (!in_module(&c, *(PyObject **)at, sizeof(PyVarObject))
                || !var_ok(&c, *(PyObject **)at, &PyTuple_Type)))
        {
            return "a frozenset is malformed (corrupt archive)";
        }
    }
    return NULL;
}
