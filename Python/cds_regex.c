/* pycds: the programs of regular expressions, archived.
 *
 * re.compile() of a pattern not in re's cache runs re._parser and
 * re._compiler, in Python: from 0.1M to over 1M instructions a pattern,
 * a sixth of what pip runs at start-up.  What it produces -- the
 * arguments re._compiler.compile() passes to _sre.compile() -- depends
 * only on the pattern, its flags and the code of the re package, so an
 * archive can hold it as it holds code:
 *
 *   TRACE: re._compiler.compile() calls _imp._cds_regex(pattern, flags),
 *   which records the pair in the module list, as a line
 *   "re<TAB>regex<TAB>FLAGS TYPE HEX" (TYPE s for str, b for bytes; HEX
 *   the pattern, str as UTF-8 with surrogates passed).
 *
 *   DUMP: compiles each listed pattern as re does, with warnings made
 *   errors (a pattern re warns about is left to re, which warns), and
 *   archives its program as an entry of kind KIND_REGEX, named by a hash
 *   of (type, flags, pattern): a code object whose one constant is the
 *   tuple (pattern, flags, final flags, code as 32-bit words, groups,
 *   group index items, index group).
 *
 *   SHARE: _imp._cds_regex(pattern, flags) finds the entry, checks that it
 *   holds this very pattern and flags, and returns the arguments for
 *   _sre.compile(), which validates the program as it does re's own.
 *
 * A program is only as current as the re package that compiled it: every
 * entry holds (in its source_hash field) a digest of the source hashes of
 * re's modules at dump time, and share mode uses the entries only when the
 * digest of the re modules this process imported is the same.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "cds_internal.h"

#include <sys/stat.h>

#define FLAG_DEBUG 128            /* re.DEBUG: printed, never cached */
#define MAX_PATTERN 4096          /* bytes of a recorded pattern */
#define MAX_TRACED 10000          /* patterns a process records */

/* the modules whose code makes a program (_sre is in the binary) */
static const char *const re_modules[] = {
    "re._parser", "re._compiler", "re._constants", "re._casefix",
};
#define N_RE_MODULES (sizeof(re_modules) / sizeof(re_modules[0]))

Py_ssize_t _PyCDS_RegexServed;

/* An archivable pattern: exact str or bytes, and flags an exact int
   without re.DEBUG; 0 if not. */
static int
archivable(PyObject *pattern, PyObject *flags, long *cflags)
{
    if (!(PyUnicode_CheckExact(pattern) || PyBytes_CheckExact(pattern))
        || !PyLong_CheckExact(flags))
    {
        return 0;
    }
    int overflow;
    long f = PyLong_AsLongAndOverflow(flags, &overflow);
    if (overflow || f < 0 || f > INT32_MAX || (f & FLAG_DEBUG)) {
        return 0;
    }
    *cflags = f;
    return 1;
}

/* The index name of (pattern, flags): its type and a hash of it. */
static void
entry_name(PyObject *pattern, long flags, char name[24])
{
    const void *data;
    size_t len;
    uint64_t seed = (uint64_t)flags << 8;
    if (PyUnicode_CheckExact(pattern)) {
        data = PyUnicode_DATA(pattern);
        len = (size_t)PyUnicode_GET_LENGTH(pattern) * PyUnicode_KIND(pattern);
        seed |= PyUnicode_KIND(pattern);
    }
    else {
        data = PyBytes_AS_STRING(pattern);
        len = (size_t)PyBytes_GET_SIZE(pattern);
    }
    uint64_t h = _PyCDS_Checksum(seed ^ ((uint64_t)len << 40), data, len);
    _PyCDS_HashName(PyBytes_CheckExact(pattern) ? 'b' : 's', h, name);
}

/* --- TRACE -------------------------------------------------------------- */

void
_PyCDS_TraceRegex(PyObject *pattern, PyObject *flags)
{
    static int traced;
    long f;
    if (traced >= MAX_TRACED || !archivable(pattern, flags, &f)) {
        return;
    }
    PyObject *bytes = PyUnicode_CheckExact(pattern)
        ? PyUnicode_AsEncodedString(pattern, "utf-8", "surrogatepass")
        : Py_NewRef(pattern);
    if (bytes == NULL) {
        PyErr_Clear();
        return;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "%ld %c ", f,
             PyBytes_CheckExact(pattern) ? 'b' : 's');
    char *field = n <= MAX_PATTERN
        ? _PyCDS_ListHexField(prefix, PyBytes_AS_STRING(bytes), (size_t)n)
        : NULL;
    if (field != NULL) {
        _PyCDS_TraceEntry("re", "regex", field);
        traced++;
        PyMem_RawFree(field);
    }
    Py_DECREF(bytes);
}

/* --- the digest of the re package's sources ------------------------------ */

/* The source file of module 'name' as this process imported it: a new
   bytes object (file system encoding), or NULL without an exception. */
static PyObject *
module_file(const char *name)
{
    PyObject *modules = PyImport_GetModuleDict();
    PyObject *m = modules ? PyDict_GetItemString(modules, name) : NULL;
    PyObject *file = NULL, *bytes = NULL;
    if (m != NULL && PyModule_Check(m)) {
        file = PyObject_GetAttrString(m, "__file__");
    }
    if (file != NULL && PyUnicode_CheckExact(file)) {
        bytes = PyUnicode_EncodeFSDefault(file);
    }
    Py_XDECREF(file);
    PyErr_Clear();
    return bytes;
}

/* Combine the source hashes of re's modules, found by 'hash_of'; 0 with
   *digest set, -1 if one cannot be had. */
static int
re_digest(int (*hash_of)(const char *, const char *, uint64_t *),
          uint64_t *digest)
{
    uint64_t hashes[N_RE_MODULES];
    for (size_t i = 0; i < N_RE_MODULES; i++) {
        PyObject *file = module_file(re_modules[i]);
        int err = file == NULL
            || hash_of(re_modules[i], PyBytes_AS_STRING(file), &hashes[i]) < 0;
        Py_XDECREF(file);
        if (err) {
            _PyCDS_Log(1, "regex: no source hash of %s", re_modules[i]);
            return -1;
        }
    }
    *digest = _PyCDS_Checksum(N_RE_MODULES, hashes, sizeof(hashes));
    return 0;
}

/* The hash of the source file 'path', read now. */
static int
hash_file(const char *name, const char *path, uint64_t *hash)
{
    (void)name;
    struct stat st;
    _PyCDS_SourceStamp stamp;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)
        || _PyCDS_SourceStampOf(path, &st, &stamp) < 0)
    {
        return -1;
    }
    *hash = stamp.source_hash;
    return 0;
}

/* SHARE: the hash a current archive entry holds for the file, else the
   file's own. */
static int
hash_served(const char *name, const char *path, uint64_t *hash)
{
    const cds_index_entry *e = _PyCDS_ArchiveEntry(KIND_SOURCE, name, path,
                                                   NULL);
    if (e != NULL) {
        *hash = e->source_hash;
        return 0;
    }
    return hash_file(name, path, hash);
}

/* --- DUMP --------------------------------------------------------------- */

/* The pattern of a list line's field: a new str or bytes object and its
   flags; NULL (no exception) if the field does not decode. */
static PyObject *
decode_field(const char *field, long *flags)
{
    char *end;
    *flags = strtol(field, &end, 10);     /* the list checked the syntax */
    if (*flags > INT32_MAX) {
        return NULL;
    }
    char type = end[1];
    size_t n;
    char *raw = _PyCDS_ListUnhex(end + 3, &n);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *pattern = type == 'b'
        ? PyBytes_FromStringAndSize(raw, (Py_ssize_t)n)
        : PyUnicode_DecodeUTF8(raw, (Py_ssize_t)n, "surrogatepass");
    PyMem_RawFree(raw);
    if (pattern == NULL) {
        PyErr_Clear();
    }
    return pattern;
}

/* What re._compiler.compile() passes to _sre.compile() for 'pattern', in
   the entry's form (see the top of the file). */
static PyObject *
compile_entry(PyObject *pattern, long flags)
{
    PyObject *parser = PyImport_ImportModule("re._parser");
    PyObject *compiler = parser ? PyImport_ImportModule("re._compiler") : NULL;
    PyObject *p = compiler
        ? PyObject_CallMethod(parser, "parse", "Ol", pattern, flags) : NULL;
    PyObject *code = p
        ? PyObject_CallMethod(compiler, "_code", "Ol", p, flags) : NULL;
    PyObject *state = code ? PyObject_GetAttrString(p, "state") : NULL;
    PyObject *groupdict = NULL, *sflags = NULL, *sgroups = NULL;
    PyObject *words = NULL, *items = NULL, *indexgroup = NULL, *entry = NULL;
    if (state == NULL || !PyList_Check(code)
        || (groupdict = PyObject_GetAttrString(state, "groupdict")) == NULL
        || (sflags = PyObject_GetAttrString(state, "flags")) == NULL
        || (sgroups = PyObject_GetAttrString(state, "groups")) == NULL
        || !PyDict_Check(groupdict))
    {
        goto done;
    }
    Py_ssize_t ngroups = PyLong_AsSsize_t(sgroups);
    long final = PyLong_AsLong(sflags);
    if ((ngroups < 1 && !PyErr_Occurred()) || PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "bad group count");
        goto done;
    }
    /* the code as native 32-bit words (_sre's SRE_CODE) */
    Py_ssize_t n = PyList_GET_SIZE(code);
    words = PyBytes_FromStringAndSize(NULL, n * 4);
    for (Py_ssize_t i = 0; words != NULL && i < n; i++) {
        unsigned long v = PyLong_AsUnsignedLong(PyList_GET_ITEM(code, i));
        if ((v == (unsigned long)-1 && PyErr_Occurred()) || v > UINT32_MAX) {
            Py_CLEAR(words);
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "code word out of range");
            break;
        }
        uint32_t w = (uint32_t)v;
        memcpy(PyBytes_AS_STRING(words) + 4 * i, &w, 4);
    }
    /* (name, index) pairs in the dict's order, and index -> name */
    PyObject *list = words ? PyDict_Items(groupdict) : NULL;
    items = list ? PyList_AsTuple(list) : NULL;
    Py_XDECREF(list);
    indexgroup = items ? PyTuple_New(ngroups) : NULL;
    for (Py_ssize_t i = 0; indexgroup != NULL && i < ngroups; i++) {
        PyTuple_SET_ITEM(indexgroup, i, Py_NewRef(Py_None));
    }
    for (Py_ssize_t i = 0; indexgroup != NULL && i < PyTuple_GET_SIZE(items);
         i++)
    {
        PyObject *pair = PyTuple_GET_ITEM(items, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0);
        Py_ssize_t g = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
        if (!PyUnicode_CheckExact(k) || g < 1 || g >= ngroups) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "bad group index");
            Py_CLEAR(indexgroup);
            break;
        }
        PyObject *old = PyTuple_GET_ITEM(indexgroup, g);
        PyTuple_SET_ITEM(indexgroup, g, Py_NewRef(k));
        Py_DECREF(old);
    }
    if (indexgroup != NULL) {
        entry = Py_BuildValue("(OllOnOO)", pattern, flags, final, words,
                              ngroups - 1, items, indexgroup);
    }
done:
    Py_XDECREF(parser);
    Py_XDECREF(compiler);
    Py_XDECREF(p);
    Py_XDECREF(code);
    Py_XDECREF(state);
    Py_XDECREF(groupdict);
    Py_XDECREF(sflags);
    Py_XDECREF(sgroups);
    Py_XDECREF(words);
    Py_XDECREF(items);
    Py_XDECREF(indexgroup);
    return entry;
}

/* A code object holding 'entry' as its one constant. */
static PyObject *
entry_code(PyObject *entry)
{
    PyObject *code = Py_CompileString("", "<regex>", Py_file_input);
    PyObject *consts = code ? PyTuple_Pack(1, entry) : NULL;
    PyObject *kw = consts ? Py_BuildValue("{s:O}", "co_consts", consts) : NULL;
    PyObject *replace = kw ? PyObject_GetAttrString(code, "replace") : NULL;
    PyObject *empty = replace ? PyTuple_New(0) : NULL;
    PyObject *res = empty ? PyObject_Call(replace, empty, kw) : NULL;
    Py_XDECREF(code);
    Py_XDECREF(consts);
    Py_XDECREF(kw);
    Py_XDECREF(replace);
    Py_XDECREF(empty);
    return res;
}

/* Archive the program of one "regex" list entry ('field') unless the
   base archive holds it.  -1 only for a memory error; a pattern that
   cannot be archived is skipped. */
int
_PyCDS_DumpRegex(_PyCDS_Builder *w, const char *field,
                 _PyCDS_DumpCounts *counts)
{
    /* once per dump: the digest of re's sources (the dump has made
       warnings errors: a pattern re warns about stays re's to compile) */
    static int ready;
    static uint64_t digest;
    if (ready == 0) {
        PyObject *re = PyImport_ImportModule("re");
        ready = (re != NULL && re_digest(hash_file, &digest) == 0) ? 1 : -1;
        Py_XDECREF(re);
        if (ready < 0) {
            PyErr_Clear();
            _PyCDS_Log(1, "dump: regular expressions not archived: the re "
                       "package's sources cannot be read");
        }
    }
    long flags;
    PyObject *pattern = ready > 0 ? decode_field(field, &flags) : NULL;
    if (pattern == NULL) {
        counts->skipped++;
        return 0;
    }
    char name[24];
    entry_name(pattern, flags, name);
    if (_PyCDS_BaseHolds(KIND_REGEX, name, NULL)) {
        counts->in_base++;
        Py_DECREF(pattern);
        return 0;
    }
    PyObject *entry = compile_entry(pattern, flags);
    PyObject *code = entry ? entry_code(entry) : NULL;
    PyObject *pyname = code ? PyUnicode_FromString(name) : NULL;
    _PyCDS_SourceStamp stamp;
    memset(&stamp, 0, sizeof(stamp));
    stamp.source_hash = digest;
    int err = 0;
    if (pyname == NULL
        || _PyCDS_BuilderAddModule(w, KIND_REGEX, pyname, NULL, &stamp,
                                   code) < 0)
    {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            err = -1;
        }
        else {
            if (_PyCDS_GetSettings()->verbose >= 2) {
                PyObject *r = PyObject_Repr(pattern);
                PyObject *exc = PyErr_GetRaisedException();
                PyObject *msg = exc ? PyObject_Str(exc) : NULL;
                _PyCDS_Log(2, "dump: regex %s not archived: %s",
                           r ? PyUnicode_AsUTF8(r) : "?",
                           msg ? PyUnicode_AsUTF8(msg) : "?");
                Py_XDECREF(r);
                Py_XDECREF(msg);
                Py_XDECREF(exc);
            }
            PyErr_Clear();
            counts->skipped++;
        }
    }
    else {
        counts->archived++;
    }
    Py_XDECREF(pyname);
    Py_XDECREF(code);
    Py_XDECREF(entry);
    Py_DECREF(pattern);
    return err;
}

/* --- SHARE -------------------------------------------------------------- */

/* The arguments after the pattern for _sre.compile(): (flags, code,
   groups, groupindex, indexgroup), new objects but for the archived
   index group; NULL (no exception) if the entry is not well-formed. */
static PyObject *
program_of(PyObject *entry, PyObject *pattern, long flags)
{
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 7) {
        return NULL;
    }
    PyObject *pat = PyTuple_GET_ITEM(entry, 0);
    PyObject *words = PyTuple_GET_ITEM(entry, 3);
    PyObject *items = PyTuple_GET_ITEM(entry, 5);
    PyObject *indexgroup = PyTuple_GET_ITEM(entry, 6);
    if (Py_TYPE(pat) != Py_TYPE(pattern)
        || PyObject_RichCompareBool(pat, pattern, Py_EQ) != 1
        || PyLong_AsLong(PyTuple_GET_ITEM(entry, 1)) != flags
        || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 2))
        || !PyBytes_CheckExact(words) || PyBytes_GET_SIZE(words) % 4 != 0
        || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 4))
        || !PyTuple_CheckExact(items) || !PyTuple_CheckExact(indexgroup))
    {
        PyErr_Clear();
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(words) / 4;
    PyObject *code = PyList_New(n);
    for (Py_ssize_t i = 0; code != NULL && i < n; i++) {
        uint32_t w;
        memcpy(&w, PyBytes_AS_STRING(words) + 4 * i, 4);
        PyObject *v = PyLong_FromUnsignedLong(w);
        if (v == NULL) {
            Py_CLEAR(code);
            break;
        }
        PyList_SET_ITEM(code, i, v);
    }
    PyObject *groupindex = code ? PyDict_New() : NULL;
    for (Py_ssize_t i = 0; groupindex != NULL && i < PyTuple_GET_SIZE(items);
         i++)
    {
        PyObject *pair = PyTuple_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
            || PyDict_SetItem(groupindex, PyTuple_GET_ITEM(pair, 0),
                              PyTuple_GET_ITEM(pair, 1)) < 0)
        {
            Py_CLEAR(groupindex);
        }
    }
    PyObject *res = groupindex
        ? PyTuple_Pack(5, PyTuple_GET_ITEM(entry, 2), code,
                       PyTuple_GET_ITEM(entry, 4), groupindex, indexgroup)
        : NULL;
    Py_XDECREF(code);
    Py_XDECREF(groupindex);
    if (res == NULL) {
        PyErr_Clear();
    }
    return res;
}

/* _imp._cds_regex() in share mode: the arguments for _sre.compile() after
   the pattern, or NULL (no exception) for re to compile it. */
PyObject *
_PyCDS_RegexProgram(PyObject *pattern, PyObject *flags)
{
    /* 1: the re modules are those of the archives' programs */
    static int current;
    static uint64_t digest;
    long f;
    if (current < 0 || !archivable(pattern, flags, &f)
        || !_PyCDS_ArchiveHolds(KIND_REGEX))
    {
        return NULL;
    }
    char name[24];
    entry_name(pattern, f, name);
    PyObject *code;
    const cds_index_entry *e = _PyCDS_ArchiveEntry(KIND_REGEX, name, NULL,
                                                   &code);
    if (e == NULL) {
        return NULL;
    }
    if (current == 0) {
        current = re_digest(hash_served, &digest) == 0 ? 1 : -1;
        PyErr_Clear();
    }
    if (current < 0 || e->source_hash != digest) {
        _PyCDS_Log(2, "regex: %s: compiled by another version of re", name);
        return NULL;
    }
    PyObject *program = program_of(
        PyTuple_GET_ITEM(((PyCodeObject *)code)->co_consts, 0), pattern, f);
    if (program != NULL) {
        _PyCDS_RegexServed++;
    }
    return program;
}
