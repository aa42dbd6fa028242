/* pycds: the object builder -- from module code objects to the laid-out
 * archive image (the writer side of cds_format.h).
 *
 * DUMP (cds_dump.c) adds one module at a time; its code object and every
 * constant it reaches are copied, in their in-memory form, into the region
 * that matches what will write to them at run time (see R_STR in
 * cds_format.h), with each pointer slot and fixup recorded, per module.
 * cds_layout.c then places it all in the file.  The object switch is
 * write_object(), as marshal.c's w_object().
 *
 * Errors: functions return -1 with a Python exception set (MemoryError,
 * or a TypeError naming a constant that cannot be archived); a module that
 * fails leaves nothing of itself in the builder.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_code.h"          // _PyCode_CODE()
#include "pycore_gc.h"            // PyGC_Head
#include "pycore_long.h"          // _PyLong_DigitCount()
#include "pycore_object.h"        // _PyObject_VAR_SIZE()
#include "marshal.h"              // PyMarshal_WriteObjectToString()
#include "cds_internal.h"
#include "cds_builder.h"

#include <errno.h>
#include <sys/stat.h>

static int
buf_reserve(buffer *b, size_t extra)
{
    if (b->len + extra <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    char *data = PyMem_RawRealloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(data + b->cap, 0, cap - b->cap);
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Allocate 'size' zeroed bytes aligned to CDS_ALIGN; returns the offset
   or -1. */
static Py_ssize_t
buf_alloc(buffer *b, size_t size)
{
    size_t start = (b->len + CDS_ALIGN - 1) & ~(size_t)(CDS_ALIGN - 1);
    if (buf_reserve(b, start - b->len + size) < 0) {
        return -1;
    }
    memset(b->data + b->len, 0, start - b->len + size);
    b->len = start + size;
    return (Py_ssize_t)start;
}

int
_PyCDS_BufAppend(buffer *b, const void *data, size_t size)
{
    if (buf_reserve(b, size) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, data, size);
    b->len += size;
    return 0;
}


static int
slots_add(slot_vec *v, slot_rec rec)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        slot_rec *items = PyMem_RawRealloc(v->items, cap * sizeof(slot_rec));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len++] = rec;
    return 0;
}


static int write_object(writer *w, PyObject *op, uint32_t *region,
                        uint64_t *offset);

/* Whether a slot pointing at 'op' gets a fixup (tuples holding one go to
   R_TUP). */
static int
needs_fixup(writer *w, PyObject *op)
{
    if (_PyCDS_IsStaticObject(w->image, op)) {
        return 0;
    }
    if (PyFrozenSet_CheckExact(op)) {
        return 1;
    }
    return PyUnicode_CheckExact(op) && PyUnicode_CHECK_INTERNED(op);
}

/* Make the object at (region, offset) immortal and point its type at the
   interpreter image. */
static int
init_header(writer *w, uint32_t region, uint64_t offset, PyObject *op)
{
    PyObject *copy = (PyObject *)(w->region[region].data + offset);
    copy->ob_refcnt = _Py_IMMORTAL_REFCNT;
    copy->ob_type = (PyTypeObject *)((uintptr_t)Py_TYPE(op) - w->image->bias);
    w->objects++;
    if (region == R_STR || region == R_SEED) {
        /* shared by modules: the loader sets the type of each string when
           it interns it, instead of a relocation record */
        return 0;
    }
    slot_rec rec = {region, RELOC_IMAGE, offset + offsetof(PyObject, ob_type),
                    0, 0};
    return slots_add(&w->ptrs, rec);
}

/* Frozensets are archived as a tuple of their items in a deterministic
   order (by marshal representation), rebuilt at load time: their hash
   table depends on the process's hash seed. */
static PyObject *
frozenset_items(PyObject *fs)
{
    PyObject *items = PySequence_List(fs);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *keyed = PyList_New(n);
    if (keyed == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *key = PyMarshal_WriteObjectToString(item, Py_MARSHAL_VERSION);
        if (key == NULL) {
            Py_DECREF(items);
            Py_DECREF(keyed);
            return NULL;
        }
        PyObject *pair = PyTuple_Pack(2, key, item);
        Py_DECREF(key);
        if (pair == NULL) {
            Py_DECREF(items);
            Py_DECREF(keyed);
            return NULL;
        }
        PyList_SET_ITEM(keyed, i, pair);
    }
    Py_DECREF(items);
    if (PyList_Sort(keyed) < 0) {
        Py_DECREF(keyed);
        return NULL;
    }
    PyObject *result = PyTuple_New(n);
    if (result != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(PyList_GET_ITEM(keyed, i), 1);
            PyTuple_SET_ITEM(result, i, Py_NewRef(item));
        }
    }
    Py_DECREF(keyed);
    return result;
}

/* Fill the pointer slot at (region, offset) with a reference to 'target',
   archiving the target first if needed. */
static int
put_ref(writer *w, uint32_t region, uint64_t offset, PyObject *target)
{
    if (target == NULL) {
        return 0;    /* a NULL slot stays zero */
    }
    uint64_t *slot = (uint64_t *)(w->region[region].data + offset);
    if (_PyCDS_IsStaticObject(w->image, target)) {
        *slot = (uint64_t)((uintptr_t)target - w->image->bias);
        slot_rec rec = {region, RELOC_IMAGE, offset, 0, 0};
        return slots_add(&w->ptrs, rec);
    }
    int fixup = 0;
    PyObject *archived = target;
    if (PyFrozenSet_CheckExact(target)) {
        archived = frozenset_items(target);
        if (archived == NULL) {
            return -1;
        }
        int err = PyList_Append(w->keep, archived);
        Py_DECREF(archived);
        if (err < 0) {
            return -1;
        }
        fixup = FIXUP_FROZENSET;
    }
    else if (PyUnicode_CheckExact(target) && PyUnicode_CHECK_INTERNED(target)) {
        fixup = FIXUP_INTERN;
    }
    uint32_t tregion;
    uint64_t toffset;
    if (write_object(w, archived, &tregion, &toffset) < 0) {
        return -1;
    }
    /* write_object() may have grown (moved) the buffer: no 'slot' here */
    slot_rec rec = {region, RELOC_ARCHIVE, offset, tregion, toffset};
    if (slots_add(&w->ptrs, rec) < 0) {
        return -1;
    }
    if (fixup == FIXUP_INTERN) {
        slot_rec f = {region, FIXUP_INTERN, offset, tregion, toffset};
        return slots_add(&w->mod_interns, f);
    }
    if (fixup == FIXUP_FROZENSET) {
        slot_rec f = {region, FIXUP_FROZENSET, offset, 0, 0};
        return slots_add(&w->mod_frozensets, f);
    }
    return 0;
}

static int
memo_get(writer *w, PyObject *op, uint32_t *region, uint64_t *offset)
{
    PyObject *key = PyLong_FromVoidPtr(op);
    if (key == NULL) {
        return -1;
    }
    PyObject *value;
    int found = PyDict_GetItemRef(w->memo, key, &value);
    Py_DECREF(key);
    if (found > 0) {
        unsigned long long v = PyLong_AsUnsignedLongLong(value);
        Py_DECREF(value);
        *region = (uint32_t)(v & 7);
        *offset = v >> 3;
    }
    return found;
}

static int
memo_put(writer *w, PyObject *op, uint32_t region, uint64_t offset)
{
    PyObject *key = PyLong_FromVoidPtr(op);
    PyObject *value = PyLong_FromUnsignedLongLong((offset << 3) | region);
    int err = (key == NULL || value == NULL) ? -1
              : PyDict_SetItem(w->memo, key, value);
    Py_XDECREF(key);
    Py_XDECREF(value);
    return err;
}

/* Copy 'size' bytes of 'op' into a new object in 'region'. */
static Py_ssize_t
copy_object(writer *w, uint32_t region, PyObject *op, const void *src,
            size_t size, size_t prefix)
{
    Py_ssize_t at = buf_alloc(&w->region[region], prefix + size);
    if (at < 0) {
        return -1;
    }
    uint64_t offset = (uint64_t)at + prefix;
    memcpy(w->region[region].data + offset, src, size);
    if (memo_put(w, op, region, offset) < 0
        || init_header(w, region, offset, op) < 0)
    {
        return -1;
    }
    return (Py_ssize_t)offset;
}

/* A string: never cold, as hashing caches the hash in the string (and
   unicode-keyed dicts rely on it), interning writes its state, and
   PyUnicode_AsUTF8() caches a pointer in a non-ASCII one.  Interned ones
   go to R_STR (R_SEED for start-up strings), once per archive. */
static Py_ssize_t
write_str(writer *w, PyObject *op, uint32_t *region)
{
    size_t header = PyUnicode_IS_ASCII(op) ? sizeof(PyASCIIObject)
                                           : sizeof(PyCompactUnicodeObject);
    size_t size = header + (PyUnicode_GET_LENGTH(op) + 1) * PyUnicode_KIND(op);
    *region = R_WARM;
    if (PyUnicode_CHECK_INTERNED(op)) {
        int startup = w->startup ? PySet_Contains(w->startup, op) : 0;
        if (startup < 0) {
            return -1;
        }
        *region = startup ? R_SEED : R_STR;
    }
    Py_ssize_t at = copy_object(w, *region, op, op, size, 0);
    if (at < 0) {
        return -1;
    }
    PyASCIIObject *s = (PyASCIIObject *)(w->region[*region].data + at);
    s->hash = -1;
    /* rebuild the state word: its padding bits are not initialized in
       the live object, and the archive must be reproducible */
    memset((char *)s + offsetof(PyASCIIObject, state), 0,
           sizeof(PyASCIIObject) - offsetof(PyASCIIObject, state));
    s->state.interned = SSTATE_NOT_INTERNED;
    s->state.kind = PyUnicode_KIND(op);
    s->state.compact = 1;
    s->state.ascii = PyUnicode_IS_ASCII(op);
    s->state.statically_allocated = 1;   /* never freed */
    if (!PyUnicode_IS_ASCII(op)) {
        ((PyCompactUnicodeObject *)s)->utf8 = NULL;
        ((PyCompactUnicodeObject *)s)->utf8_length = 0;
    }
    if (*region == R_STR || *region == R_SEED) {
        PyObject *off = PyLong_FromUnsignedLongLong(
            ((unsigned long long)at << 3) | *region);
        if (off == NULL || PyDict_SetItem(w->strings, op, off) < 0) {
            Py_XDECREF(off);
            return -1;
        }
        Py_DECREF(off);
    }
    return at;
}

/* A tuple, preceded by an untracked, zeroed PyGC_Head; in R_TUP if a
   fixup may write to one of its slots. */
static Py_ssize_t
write_tuple(writer *w, PyObject *op, uint32_t *region)
{
    Py_ssize_t n = PyTuple_GET_SIZE(op);
    *region = R_COLD;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (needs_fixup(w, PyTuple_GET_ITEM(op, i))) {
            *region = R_TUP;
        }
    }
    size_t size = _PyObject_VAR_SIZE(&PyTuple_Type, n);
    Py_ssize_t at = copy_object(w, *region, op, op, size, sizeof(PyGC_Head));
    if (at < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t slot = at + offsetof(PyTupleObject, ob_item)
                        + i * sizeof(PyObject *);
        if (put_ref(w, *region, slot, PyTuple_GET_ITEM(op, i)) < 0) {
            return -1;
        }
    }
    return at;
}

/* A code object, with its per-process state cleared and a co_version of
   its own. */
static Py_ssize_t
write_code(writer *w, PyCodeObject *co, uint32_t *region)
{
    size_t size = _PyObject_VAR_SIZE(&PyCode_Type, Py_SIZE(co));
    /* copy only the bytes in use: the allocation's tail is garbage */
    size_t used = offsetof(PyCodeObject, co_code_adaptive)
                  + Py_SIZE(co) * sizeof(_Py_CODEUNIT);
    PyObject *id = PyLong_FromVoidPtr(co);
    int once = id == NULL ? -1 : PySet_Contains(w->once, id);
    Py_XDECREF(id);
    if (once < 0) {
        return -1;
    }
    *region = once ? R_ONCE : R_CODE;
    Py_ssize_t at = copy_object(w, *region, (PyObject *)co, co, used, 0);
    if (at < 0 || buf_reserve(&w->region[*region], size - used) < 0) {
        return -1;
    }
    memset(w->region[*region].data + at + used, 0, size - used);
    w->region[*region].len = at + size;
    PyCodeObject *copy = (PyCodeObject *)(w->region[*region].data + at);
    /* the padding after _co_firsttraceable is not initialized */
    size_t hole = offsetof(PyCodeObject, _co_firsttraceable) + sizeof(int);
    memset((char *)copy + hole, 0, offsetof(PyCodeObject, co_extra) - hole);
    /* per-process state, set lazily; the version is unique in the
       archive and above any new code object's (see init_code()) */
    if (w->code_versions >= UINT32_MAX - _PyCDS_CODE_VERSION_BASE) {
        PyErr_SetString(PyExc_OverflowError, "too many code objects");
        return -1;
    }
    copy->co_version = _PyCDS_CODE_VERSION_BASE + w->code_versions++;
    copy->co_weakreflist = NULL;
    copy->co_executors = NULL;
    copy->_co_cached = NULL;
    copy->_co_instrumentation_version = 0;
    copy->_co_monitoring = NULL;
    copy->co_extra = NULL;
#define CODE_REF(field) \
    if (put_ref(w, *region, at + offsetof(PyCodeObject, field), \
                (PyObject *)co->field) < 0) { \
        return -1; \
    }
    CODE_REF(co_consts)
    CODE_REF(co_names)
    CODE_REF(co_exceptiontable)
    CODE_REF(co_localsplusnames)
    CODE_REF(co_localspluskinds)
    CODE_REF(co_filename)
    CODE_REF(co_name)
    CODE_REF(co_qualname)
    CODE_REF(co_linetable)
#undef CODE_REF
    slot_rec f = {*region, FIXUP_CODE, (uint64_t)at, 0, 0};
    if (slots_add(&w->mod_codes, f) < 0) {
        return -1;
    }
    return at;
}

/* Archive 'op' (once per module: memoized) and return where it is. */
static int
write_object(writer *w, PyObject *op, uint32_t *region, uint64_t *offset)
{
    int found = memo_get(w, op, region, offset);
    if (found != 0) {
        return found < 0 ? -1 : 0;
    }
    Py_ssize_t at;
    if (PyUnicode_CheckExact(op) && PyUnicode_CHECK_INTERNED(op)) {
        /* interned strings are shared by all modules */
        PyObject *known = PyDict_GetItemWithError(w->strings, op);
        if (known != NULL) {
            unsigned long long v = PyLong_AsUnsignedLongLong(known);
            *region = (uint32_t)(v & 7);
            *offset = v >> 3;
            return memo_put(w, op, *region, *offset);
        }
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    if (PyUnicode_CheckExact(op)) {
        at = write_str(w, op, region);
    }
    else if (PyBytes_CheckExact(op)) {
        size_t size = offsetof(PyBytesObject, ob_sval) + PyBytes_GET_SIZE(op) + 1;
        *region = R_COLD;
        at = copy_object(w, *region, op, op, size, 0);
        if (at >= 0) {
_Py_COMP_DIAG_PUSH
_Py_COMP_DIAG_IGNORE_DEPR_DECLS
            ((PyBytesObject *)(w->region[*region].data + at))->ob_shash = -1;
_Py_COMP_DIAG_POP
        }
    }
    else if (PyLong_CheckExact(op)) {
        Py_ssize_t ndigits = _PyLong_DigitCount((PyLongObject *)op);
        size_t size = offsetof(PyLongObject, long_value.ob_digit)
                      + sizeof(digit) * (ndigits ? ndigits : 1);
        *region = R_COLD;
        at = copy_object(w, *region, op, op, size, 0);
    }
    else if (PyFloat_CheckExact(op)) {
        *region = R_COLD;
        at = copy_object(w, *region, op, op, sizeof(PyFloatObject), 0);
    }
    else if (PyComplex_CheckExact(op)) {
        *region = R_COLD;
        at = copy_object(w, *region, op, op, sizeof(PyComplexObject), 0);
    }
    else if (PyTuple_CheckExact(op)) {
        at = write_tuple(w, op, region);
    }
    else if (PyCode_Check(op)) {
        at = write_code(w, (PyCodeObject *)op, region);
    }
    else {
        PyErr_Format(PyExc_TypeError, "a constant of type %s cannot be archived",
                     Py_TYPE(op)->tp_name);
        return -1;
    }
    if (at < 0) {
        return -1;
    }
    *offset = (uint64_t)at;
    return 0;
}

static int
compare_intern_fixups(const void *a, const void *b)
{
    const slot_rec *x = a, *y = b;
    /* by target string, then by slot: deterministic */
    if (x->target_region != y->target_region) {
        return x->target_region < y->target_region ? -1 : 1;
    }
    if (x->target != y->target) {
        return x->target < y->target ? -1 : 1;
    }
    if (x->region != y->region) {
        return x->region < y->region ? -1 : 1;
    }
    return x->offset < y->offset ? -1 : (x->offset > y->offset);
}

/* Remove the code fixups of the run-once code objects (R_ONCE): their
   archived originals are never used, so no code watcher hears of them. */
static void
drop_copied_bodies(writer *w)
{
    size_t kept = 0;
    for (size_t i = 0; i < w->mod_codes.len; i++) {
        if (w->mod_codes.items[i].region != R_ONCE) {
            w->mod_codes.items[kept++] = w->mod_codes.items[i];
        }
    }
    w->mod_codes.len = kept;
}

/* Add the ids of 'co' and of the class bodies among its constants, at any
   depth, to w->once: the code objects SHARE serves as heap copies. */
static int
find_run_once(writer *w, PyCodeObject *co)
{
    PyObject *id = PyLong_FromVoidPtr(co);
    if (id == NULL || PySet_Add(w->once, id) < 0) {
        Py_XDECREF(id);
        return -1;
    }
    Py_DECREF(id);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
        if (_PyCDS_IsClassBody(c) && find_run_once(w, (PyCodeObject *)c) < 0) {
            return -1;
        }
    }
    return 0;
}

static void
move_slots(slot_vec *v, size_t start, uint64_t base)
{
    for (size_t i = start; i < v->len; i++) {
        slot_rec *r = &v->items[i];
        if (r->region == R_ONCE) {
            r->region = R_CODE;
            r->offset += base;
        }
        if (r->target_region == R_ONCE) {
            r->target_region = R_CODE;
            r->target += base;
        }
    }
}

/* Move the module's run-once code objects (R_ONCE, its own first) to the
   end of its R_CODE range, where a process that copies the module can
   release them once it has made their heap copies (cds_share.c). */
static int
place_run_once(writer *w, size_t ptrs0, uint32_t *code_region,
               uint64_t *code)
{
    buffer *once = &w->region[R_ONCE];
    if (once->len == 0) {
        return 0;
    }
    Py_ssize_t base = buf_alloc(&w->region[R_CODE], once->len);
    if (base < 0) {
        return -1;
    }
    memcpy(w->region[R_CODE].data + base, once->data, once->len);
    move_slots(&w->ptrs, ptrs0, (uint64_t)base);
    move_slots(&w->mod_interns, 0, (uint64_t)base);
    move_slots(&w->mod_frozensets, 0, (uint64_t)base);
    move_slots(&w->mod_codes, 0, (uint64_t)base);
    if (*code_region == R_ONCE) {
        *code_region = R_CODE;
        *code += (uint64_t)base;
    }
    once->len = 0;
    return 0;
}

/* --- the builder's interface ------------------------------------------ */

_PyCDS_Builder *
_PyCDS_BuilderNew(PyObject *startup_strings)
{
    writer *w = PyMem_RawCalloc(1, sizeof(writer));
    if (w == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    w->image = _PyCDS_GetImage();
    w->memo = PyDict_New();
    w->once = PySet_New(NULL);
    w->strings = PyDict_New();
    w->keep = PyList_New(0);
    if (w->memo == NULL || w->once == NULL || w->strings == NULL || w->keep == NULL
        || (startup_strings != NULL
            && (w->startup = PySet_New(startup_strings)) == NULL))
    {
        _PyCDS_BuilderFree(w);
        return NULL;
    }
    return w;
}

void
_PyCDS_BuilderFree(_PyCDS_Builder *w)
{
    if (w == NULL) {
        return;
    }
    for (size_t i = 0; i < w->nmodules; i++) {
        Py_XDECREF(w->modules[i].name);
        Py_XDECREF(w->modules[i].path);
    }
    PyMem_RawFree(w->modules);
    for (int r = 0; r < CDS_NREGIONS + 2; r++) {
        PyMem_RawFree(w->region[r].data);
    }
    Py_XDECREF(w->strings);
    Py_XDECREF(w->startup);
    PyMem_RawFree(w->ptrs.items);
    PyMem_RawFree(w->fixups.items);
    PyMem_RawFree(w->mod_interns.items);
    PyMem_RawFree(w->mod_frozensets.items);
    PyMem_RawFree(w->mod_codes.items);
    Py_XDECREF(w->memo);
    Py_XDECREF(w->once);
    Py_XDECREF(w->keep);
    PyMem_RawFree(w);
}

Py_ssize_t
_PyCDS_BuilderObjects(const _PyCDS_Builder *w)
{
    return w->objects;
}

/* Whether source module 'name' from 'path' (bytes) was added already. */
int
_PyCDS_BuilderHasSource(const _PyCDS_Builder *w, PyObject *name,
                        PyObject *path)
{
    for (size_t i = 0; i < w->nmodules; i++) {
        const module_rec *m = &w->modules[i];
        if (m->kind == KIND_SOURCE && m->path
            && PyUnicode_Compare(m->name, name) == 0
            && strcmp(PyBytes_AS_STRING(m->path),
                      PyBytes_AS_STRING(path)) == 0)
        {
            return 1;
        }
    }
    return 0;
}

/* Append this module's fixups in the order they must run: interning,
   frozensets (whose items may be interned strings), then the code
   objects; interning fixups grouped by string, so that the loader interns
   each string once. */
static int
commit_fixups(writer *w)
{
    qsort(w->mod_interns.items, w->mod_interns.len, sizeof(slot_rec),
          compare_intern_fixups);
    slot_vec *parts[3] = {&w->mod_interns, &w->mod_frozensets, &w->mod_codes};
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < parts[i]->len; j++) {
            if (slots_add(&w->fixups, parts[i]->items[j]) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Archive one module's code object; on failure nothing of it remains. */
int
_PyCDS_BuilderAddModule(_PyCDS_Builder *w, int kind, PyObject *name,
                        PyObject *path, const _PyCDS_SourceStamp *stamp,
                        PyObject *code)
{
    size_t len0[CDS_NREGIONS];
    for (int r = 0; r < CDS_NREGIONS; r++) {
        len0[r] = w->region[r].len;
    }
    size_t ptrs0 = w->ptrs.len, fix0 = w->fixups.len;
    Py_ssize_t objects0 = w->objects;
    uint32_t versions0 = w->code_versions;
    w->mod_interns.len = w->mod_frozensets.len = w->mod_codes.len = 0;
    PyDict_Clear(w->memo);
    w->region[R_ONCE].len = 0;
    if (PySet_Clear(w->once) < 0
        || (PyCode_Check(code) && find_run_once(w, (PyCodeObject *)code) < 0))
    {
        goto error;
    }

    uint32_t region;
    uint64_t offset;
    if (write_object(w, code, &region, &offset) < 0) {
        goto error;
    }
    drop_copied_bodies(w);
    if (place_run_once(w, ptrs0, &region, &offset) < 0) {
        goto error;
    }
    if (commit_fixups(w) < 0) {
        goto error;
    }
    if (w->nmodules == w->capmodules) {
        size_t cap = w->capmodules ? w->capmodules * 2 : 256;
        module_rec *m = PyMem_RawRealloc(w->modules, cap * sizeof(module_rec));
        if (m == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        w->modules = m;
        w->capmodules = cap;
    }
    module_rec *m = &w->modules[w->nmodules++];
    memset(m, 0, sizeof(*m));
    m->kind = (uint32_t)kind;
    m->name = Py_NewRef(name);
    m->path = Py_XNewRef(path);
    if (stamp != NULL) {
        m->stamp = *stamp;
    }
    m->code_region = region;
    m->code = offset;
    for (int r = 0; r < CDS_NREGIONS; r++) {
        m->start[r] = len0[r];
        m->end[r] = w->region[r].len;
    }
    m->ptr_start = ptrs0;
    m->ptr_end = w->ptrs.len;
    m->fix_start = fix0;
    m->fix_end = w->fixups.len;
    return 0;

error:
    /* strings it added to R_STR stay: complete objects other modules may
       share */
    for (int r = R_STR + 1; r < CDS_NREGIONS; r++) {
        w->region[r].len = len0[r];
    }
    w->ptrs.len = ptrs0;
    w->fixups.len = fix0;
    w->objects = objects0;
    w->code_versions = versions0;
    return -1;
}


