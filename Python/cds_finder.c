/* pycds: the fast path of the path-based finder, for archived modules.
 *
 * importlib._bootstrap._find_spec() first calls _imp._cds_find_spec(name,
 * path).  For a module the archive holds, this makes the search the Python
 * finders would make -- sys.meta_path's BuiltinImporter, FrozenImporter
 * and PathFinder, then the FileFinder of each entry of sys.path (or of the
 * parent package's __path__) as cached in sys.path_importer_cache -- and
 * returns the spec when it can prove, from the finders' own directory
 * caches, that the search finds the archived source file.  The spec is
 * made by that FileFinder's _get_spec(), as the Python search makes it.
 *
 * Whatever it cannot decide cheaply returns None, and the normal search
 * runs: another meta path finder before PathFinder, a path entry without a
 * cached finder or with one of another type, a directory cache that is out
 * of date (the directory's mtime changed, or importlib.invalidate_caches()
 * was called), a directory of the module's name (a package or namespace
 * portion other than the archived one), a file another loader would load
 * first, a finder method replaced on its class (a mock), -vv.  So the spec
 * is always the one the normal search returns, found without running
 * Python code for most imports.
 *
 * Errors: none reach the caller: whatever fails returns None (with the
 * exception cleared), and the normal search runs.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_fileutils.h"     // _Py_stat()
#include "pycore_global_objects.h" // _Py_ID()
#include "pycore_import.h"        // _PyImport_AcquireLock()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "pycore_unicodeobject.h" // _PyUnicode_JoinArray()
#include "cds_internal.h"

#include <sys/stat.h>
#include <limits.h>               // PATH_MAX
#include <unistd.h>               // getcwd()

Py_ssize_t _PyCDS_SpecsFound = 0;

/* Attribute and method names, interned (immortal) once: the archive is
   used by the main interpreter of one runtime only, and not after it is
   finalized (see _PyCDS_ShareFini()). */
static struct {
    PyObject *path, *_path_mtime, *_path_cache, *_loaders, *_get_spec,
             *_bootstrap_external, *BuiltinImporter, *FrozenImporter,
             *PathFinder, *FileFinder, *SourceFileLoader, *is_builtin,
             *find_frozen, *meta_path, *path_importer_cache, *slash,
             *py, *find_spec, *_path_importer_cache, *func_attr,
             *bootstrap_file, *external_file, *_cached, *cached,
             *implementation, *cache_tag, *flags, *optimize,
             *pycache_prefix, *SOURCE_SUFFIXES, *BYTECODE_SUFFIXES,
             *_PYCACHE, *_OPT, *path_separators, *_get_cached,
             *cache_from_source, *_path_split, *_path_join, *origin,
             *_set_fileattr, *fget, *dot;
} str;

static PyObject *
intern_immortal(const char *s)
{
    PyObject *u = PyUnicode_FromString(s);
    if (u != NULL) {
        _PyUnicode_InternImmortal(_PyInterpreterState_GET(), &u);
    }
    return u;
}

static int
init_strings(void)
{
    if (str.py != NULL) {
        return 0;
    }
#define INTERN(NAME) \
    if ((str.NAME = intern_immortal(#NAME)) == NULL) { \
        return -1; \
    }
    INTERN(path) INTERN(_path_mtime) INTERN(_path_cache) INTERN(_loaders)
    INTERN(_get_spec) INTERN(_bootstrap_external) INTERN(BuiltinImporter)
    INTERN(FrozenImporter) INTERN(PathFinder) INTERN(FileFinder)
    INTERN(SourceFileLoader) INTERN(is_builtin) INTERN(find_frozen)
    INTERN(meta_path) INTERN(path_importer_cache) INTERN(find_spec)
    INTERN(_path_importer_cache) INTERN(_cached) INTERN(cached)
    INTERN(implementation) INTERN(cache_tag) INTERN(flags) INTERN(optimize)
    INTERN(pycache_prefix) INTERN(SOURCE_SUFFIXES) INTERN(BYTECODE_SUFFIXES)
    INTERN(_PYCACHE) INTERN(_OPT) INTERN(path_separators) INTERN(_get_cached)
    INTERN(cache_from_source) INTERN(_path_split) INTERN(_path_join)
    INTERN(origin) INTERN(_set_fileattr) INTERN(fget)
#undef INTERN
    str.func_attr = intern_immortal("__func__");
    str.bootstrap_file = intern_immortal("<frozen importlib._bootstrap>");
    str.external_file = intern_immortal(
        "<frozen importlib._bootstrap_external>");
    if (str.func_attr == NULL || str.bootstrap_file == NULL
        || str.external_file == NULL)
    {
        return -1;
    }
    if ((str.slash = intern_immortal("/")) == NULL) {
        return -1;
    }
    if ((str.dot = intern_immortal(".")) == NULL) {
        return -1;
    }
    str.py = intern_immortal(".py");
    return str.py == NULL ? -1 : 0;
}

/* What one path entry's FileFinder would do with the module. */
typedef enum {
    ENTRY_NOTHING,      /* returns None: the search goes on */
    ENTRY_FOUND,        /* finds the archived source file */
    ENTRY_UNDECIDED,    /* anything else: leave it to the Python search */
} entry_result;

/* _path_isfile(): 1 or 0, -1 if undecidable (a path that cannot be
   encoded, which os.stat() would report with an exception) */
static int
is_regular_file(PyObject *path)
{
    struct stat st;
    int r = _Py_stat(path, &st);
    if (r == -2) {
        PyErr_Clear();
        return -1;
    }
    return r == 0 && S_ISREG(st.st_mode);
}

/* Whether the FileFinder's directory cache is current, which is when its
   find_spec() would not refill it: the directory's st_mtime, as os.stat()
   computes the float, equals _path_mtime. */
static int
cache_is_current(PyObject *finder, PyObject *dirpath)
{
    struct stat st;
    if (_Py_stat(dirpath, &st) != 0) {
        PyErr_Clear();
        return 0;
    }
    double mtime = st.st_mtim.tv_sec + 1e-9 * (unsigned long)st.st_mtim.tv_nsec;
    PyObject *cached = PyObject_GetAttr(finder, str._path_mtime);
    if (cached == NULL) {
        PyErr_Clear();
        return 0;
    }
    int current = PyFloat_CheckExact(cached)
                  && PyFloat_AS_DOUBLE(cached) == mtime;
    Py_DECREF(cached);
    return current;
}

#define MAX_SUFFIXES 16

/* The names a FileFinder looks up for the module: tail + each suffix of
   its loaders, made once per search (every FileFinder made by the default
   path hook has the same suffix objects). */
typedef struct {
    PyObject *tail;
    Py_ssize_t n;
    PyObject *suffix[MAX_SUFFIXES];     /* borrowed from a _loaders list */
    PyObject *key[MAX_SUFFIXES];        /* tail + suffix */
} module_keys;

static void
keys_clear(module_keys *k)
{
    for (Py_ssize_t i = 0; i < k->n; i++) {
        Py_CLEAR(k->key[i]);
    }
    k->n = 0;
}

/* Check the finder's _loaders list ((suffix, loader class) tuples) and
   make the keys for its suffixes unless they are those of the last list. */
static int
keys_for(module_keys *k, PyObject *loaders)
{
    Py_ssize_t n = PyList_GET_SIZE(loaders);
    if (n > MAX_SUFFIXES) {
        return -1;
    }
    int same = (n == k->n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(loaders, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 0)))
        {
            return -1;
        }
        same = same && PyTuple_GET_ITEM(item, 0) == k->suffix[i];
    }
    if (same) {
        return 0;
    }
    keys_clear(k);
    for (Py_ssize_t i = 0; i < n; i++) {
        k->suffix[i] = PyTuple_GET_ITEM(PyList_GET_ITEM(loaders, i), 0);
        k->key[i] = PyUnicode_Concat(k->tail, k->suffix[i]);
        if (k->key[i] == NULL) {
            keys_clear(k);
            return -1;
        }
        k->n = i + 1;
    }
    return 0;
}

/* _path_join(a, b) of a path without a trailing '/' */
static PyObject *
join(PyObject *a, PyObject *b)
{
    PyObject *items[2] = {a, b};
    return _PyUnicode_JoinArray(str.slash, items, 2);
}

/* A file the finder tries with its loader i: 0 if it is not a regular file
   (the search goes on), 1 if it is a source file for SourceFileLoader (the
   one loader the archive serves), -1 if another loader would load it or it
   cannot be decided. */
static int
try_file(PyObject *file, PyObject *loaders, module_keys *keys, Py_ssize_t i,
         PyObject *source_loader)
{
    int isfile = is_regular_file(file);
    if (isfile == 0) {
        return 0;
    }
    int source = PyTuple_GET_ITEM(PyList_GET_ITEM(loaders, i), 1) == source_loader
                 && PyUnicode_Compare(keys->suffix[i], str.py) == 0;
    return (isfile > 0 && source) ? 1 : -1;
}

/* FileFinder.find_spec() for one entry, as far as it can be decided from
   the directory cache.  On ENTRY_FOUND, *found is the file's path and
   *smsl the package's search locations (or None). */
static entry_result
search_entry(PyObject *finder, module_keys *keys, PyObject *source_loader,
             PyObject **found, PyObject **smsl)
{
    entry_result result = ENTRY_UNDECIDED;
    PyObject *dirpath = NULL, *cache = NULL, *loaders = NULL;
    PyObject *base = NULL, *file = NULL;
    int r;

    dirpath = PyObject_GetAttr(finder, str.path);
    if (dirpath == NULL || !PyUnicode_CheckExact(dirpath)
        || PyUnicode_GET_LENGTH(dirpath) < 2
        || PyUnicode_READ_CHAR(dirpath, 0) != '/'
        || PyUnicode_READ_CHAR(dirpath, PyUnicode_GET_LENGTH(dirpath) - 1) == '/'
        || !cache_is_current(finder, dirpath))
    {
        goto done;
    }
    cache = PyObject_GetAttr(finder, str._path_cache);
    loaders = PyObject_GetAttr(finder, str._loaders);
    if (cache == NULL || loaders == NULL || !PySet_CheckExact(cache)
        || !PyList_CheckExact(loaders) || keys_for(keys, loaders) < 0)
    {
        goto done;
    }
    /* A directory of the module's name is a package if one of the loaders
       finds its __init__ file; otherwise the loaders' files of the module
       that the directory lists are tried, in the loaders' order. */
    int package = PySet_Contains(cache, keys->tail);
    if (package < 0) {
        goto done;
    }
    if (package) {
        base = join(dirpath, keys->tail);
        if (base == NULL) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < keys->n; i++) {
        if (package) {
            PyObject *init = PyUnicode_Concat(&_Py_ID(__init__),
                                              keys->suffix[i]);
            if (init == NULL) {
                goto done;
            }
            file = join(base, init);
            Py_DECREF(init);
        }
        else {
            r = PySet_Contains(cache, keys->key[i]);
            if (r <= 0) {
                if (r < 0) {
                    goto done;
                }
                continue;
            }
            file = join(dirpath, keys->key[i]);
        }
        if (file == NULL) {
            goto done;
        }
        r = try_file(file, loaders, keys, i, source_loader);
        if (r == 0) {
            Py_CLEAR(file);
            continue;
        }
        if (r > 0) {
            *smsl = package ? PyList_New(1) : Py_NewRef(Py_None);
            if (*smsl != NULL) {
                if (package) {
                    PyList_SET_ITEM(*smsl, 0, Py_NewRef(base));
                }
                *found = Py_NewRef(file);
                result = ENTRY_FOUND;
            }
        }
        goto done;
    }
    /* a directory without an __init__ file (a namespace portion, or not a
       directory) is left to Python; no file at all: the search goes on */
    result = package ? ENTRY_UNDECIDED : ENTRY_NOTHING;

done:
    if (PyErr_Occurred()) {
        PyErr_Clear();
        if (result == ENTRY_FOUND) {
            Py_CLEAR(*found);
            Py_CLEAR(*smsl);
        }
        result = ENTRY_UNDECIDED;
    }
    Py_XDECREF(dirpath);
    Py_XDECREF(cache);
    Py_XDECREF(loaders);
    Py_XDECREF(base);
    Py_XDECREF(file);
    return result;
}

/* Whether 'func' is a function of importlib's (not replaced, e.g. by a
   test's mock): its code comes from 'file'. */
static int
is_importlib_function(PyObject *func, PyObject *file)
{
    if (func == NULL || !PyFunction_Check(func)) {
        return 0;
    }
    PyObject *name = ((PyCodeObject *)PyFunction_GET_CODE(func))->co_filename;
    return name == file || PyUnicode_Compare(name, file) == 0;
}

/* Whether the method 'name' of class 'cls' is importlib's own (not
   replaced, e.g. by a test's mock): its code comes from 'file'. */
static int
is_importlib_method(PyObject *cls, PyObject *name, PyObject *file)
{
    PyObject *meth = _PyType_Lookup((PyTypeObject *)cls, name);  // borrowed
    if (meth == NULL) {
        return 0;
    }
    PyObject *func;
    if (Py_IS_TYPE(meth, &PyClassMethod_Type)
        || Py_IS_TYPE(meth, &PyStaticMethod_Type))
    {
        func = PyObject_GetAttr(meth, str.func_attr);
        if (func == NULL) {
            PyErr_Clear();
            return 0;
        }
    }
    else {
        func = Py_NewRef(meth);
    }
    int own = is_importlib_function(func, file);
    Py_DECREF(func);
    return own;
}

/* The meta path finders before PathFinder decline the module:
   BuiltinImporter (_imp.is_builtin) and FrozenImporter (_imp.find_frozen,
   which honours -X frozen_modules). */
static int
declined_by_builtin_and_frozen(PyObject *imp, PyObject *name)
{
    PyObject *r = PyObject_CallMethodOneArg(imp, str.is_builtin, name);
    if (r == NULL) {
        return 0;
    }
    int builtin = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (builtin != 0) {
        return 0;
    }
    r = PyObject_CallMethodOneArg(imp, str.find_frozen, name);
    if (r == NULL) {
        return 0;
    }
    int declined = (r == Py_None);
    Py_DECREF(r);
    return declined;
}

static PyObject *
get_cwd(void)
{
    char buf[PATH_MAX];
    if (getcwd(buf, sizeof(buf)) == NULL) {
        return NULL;
    }
    return PyUnicode_DecodeFSDefault(buf);
}

/* A strong reference to sys.<name>, or NULL (no exception) */
static PyObject *
sys_attr(PyInterpreterState *interp, PyObject *name)
{
    PyObject *value = NULL;
    if (interp->sysdict == NULL
        || PyDict_GetItemRef(interp->sysdict, name, &value) < 0)
    {
        PyErr_Clear();
    }
    return value;
}

/* A str that does not end with a path separator, else NULL (borrowed
   from 'dict'): _path_join() would strip it */
static PyObject *
plain_part(PyObject *dict, PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(dict, name);
    if (v == NULL || !PyUnicode_CheckExact(v) || PyUnicode_GET_LENGTH(v) == 0
        || PyUnicode_READ_CHAR(v, PyUnicode_GET_LENGTH(v) - 1) == '/')
    {
        return NULL;
    }
    return v;
}

/* ModuleSpec.cached as its property makes it on first use for a spec
   whose origin is the source file 'origin' (_get_cached(), then
   cache_from_source()), or NULL (no exception) where this does not decide
   it and the property is left to.  Reads what the Python code reads --
   sys.implementation.cache_tag, sys.flags.optimize, sys.pycache_prefix
   and importlib's constants -- and decides only the usual case: no
   pycache_prefix, importlib's own functions, an origin ending in one of
   the SOURCE_SUFFIXES, path parts that _path_join() keeps as they are. */
static PyObject *
cached_path(PyInterpreterState *interp, PyObject *external, PyObject *origin)
{
    PyObject *result = NULL, *impl = NULL, *tag = NULL, *flags = NULL;
    PyObject *opt = NULL, *prefix = NULL, *head = NULL, *first = NULL;
    PyObject *level_str = NULL;
    PyObject *dict = PyModule_GetDict(external);             /* borrowed */
    prefix = sys_attr(interp, str.pycache_prefix);
    impl = sys_attr(interp, str.implementation);
    flags = sys_attr(interp, str.flags);
    if (dict == NULL || prefix != Py_None || impl == NULL || flags == NULL) {
        goto done;
    }
    PyObject *names[4] = {str._get_cached, str.cache_from_source,
                          str._path_split, str._path_join};
    for (int i = 0; i < 4; i++) {
        if (!is_importlib_function(PyDict_GetItemWithError(dict, names[i]),
                                   str.external_file))
        {
            goto done;
        }
    }
    PyObject *sep = PyDict_GetItemWithError(dict, str.path_separators);
    PyObject *sources = PyDict_GetItemWithError(dict, str.SOURCE_SUFFIXES);
    PyObject *bytecode = PyDict_GetItemWithError(dict, str.BYTECODE_SUFFIXES);
    PyObject *pycache = plain_part(dict, str._PYCACHE);
    PyObject *opt_prefix = PyDict_GetItemWithError(dict, str._OPT);
    if (sep == NULL || !PyUnicode_CheckExact(sep)
        || !_PyUnicode_EqualToASCIIString(sep, "/")
        || sources == NULL || !PyList_CheckExact(sources)
        || bytecode == NULL || !PyList_CheckExact(bytecode)
        || PyList_GET_SIZE(bytecode) == 0
        || !PyUnicode_CheckExact(PyList_GET_ITEM(bytecode, 0))
        || pycache == NULL
        || opt_prefix == NULL || !PyUnicode_CheckExact(opt_prefix))
    {
        goto done;
    }
    /* _get_cached(): the origin ends with one of SOURCE_SUFFIXES */
    int source = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(sources) && !source; i++) {
        PyObject *suffix = PyList_GET_ITEM(sources, i);
        if (!PyUnicode_CheckExact(suffix)) {
            goto done;
        }
        source = PyUnicode_Tailmatch(origin, suffix, 0, PY_SSIZE_T_MAX, 1);
        if (source < 0) {
            goto done;
        }
    }
    tag = PyObject_GetAttr(impl, str.cache_tag);
    opt = PyObject_GetAttr(flags, str.optimize);
    if (!source || tag == NULL || !PyUnicode_CheckExact(tag)
        || opt == NULL || !PyLong_CheckExact(opt))
    {
        goto done;
    }
    int overflow;
    long level = PyLong_AsLongAndOverflow(opt, &overflow);
    if (level < 0 || overflow) {
        goto done;      /* str() of it is not alphanumeric: ValueError */
    }
    /* _path_split(), then tail.rpartition('.') */
    Py_ssize_t len = PyUnicode_GET_LENGTH(origin);
    Py_ssize_t slash = PyUnicode_FindChar(origin, '/', 0, len, -1);
    if (slash <= 0 || PyUnicode_READ_CHAR(origin, slash - 1) == '/') {
        goto done;      /* a head _path_join() would drop or strip */
    }
    Py_ssize_t dot = PyUnicode_FindChar(origin, '.', slash + 1, len, -1);
    if (dot == -2) {
        goto done;
    }
    head = PyUnicode_Substring(origin, 0, slash);
    if (dot < 0) {
        first = PyUnicode_Substring(origin, slash + 1, len);
    }
    else if (dot > slash + 1) {
        first = PyUnicode_Substring(origin, slash + 1, dot);
    }
    else {
        first = PyUnicode_Substring(origin, dot + 1, len);
    }
    if (head == NULL || first == NULL) {
        goto done;
    }
    /* head/_PYCACHE/first.tag[.opt-N]suffix: the suffix must not end
       with a separator, as _path_join() would strip it */
    PyObject *suffix = PyList_GET_ITEM(bytecode, 0);
    Py_ssize_t n = PyUnicode_GET_LENGTH(suffix);
    if (n > 0 && PyUnicode_READ_CHAR(suffix, n - 1) == '/') {
        goto done;
    }
    if (level > 0) {
        level_str = PyUnicode_FromFormat(".%U%ld", opt_prefix, level);
        if (level_str == NULL) {
            goto done;
        }
    }
    PyObject *parts[9] = {head, str.slash, pycache, str.slash, first,
                          dot < 0 ? &_Py_STR(empty) : str.dot, tag,
                          level_str ? level_str : &_Py_STR(empty), suffix};
    if (PyUnicode_GET_LENGTH(first) + PyUnicode_GET_LENGTH(tag) + n
        + (dot >= 0) + (level_str != NULL) == 0)
    {
        goto done;      /* an empty file name: _path_join() drops it */
    }
    result = _PyUnicode_JoinArray(&_Py_STR(empty), parts, 9);

done:
    PyErr_Clear();
    Py_XDECREF(prefix);
    Py_XDECREF(impl);
    Py_XDECREF(flags);
    Py_XDECREF(tag);
    Py_XDECREF(opt);
    Py_XDECREF(head);
    Py_XDECREF(first);
    Py_XDECREF(level_str);
    return result;
}

/* Set the spec's cached path now, as its property would on first use (in
   _init_module_attrs()): cache_from_source() in Python costs more than
   the rest of the search.  Only where the property runs importlib's own
   code for a spec of importlib's ModuleSpec. */
static void
set_cached(PyInterpreterState *interp, PyObject *bootstrap,
           PyObject *external, PyObject *spec, PyObject *origin)
{
    PyObject *prop = _PyType_Lookup(Py_TYPE(spec), str.cached);  // borrowed
    if (prop == NULL || !Py_IS_TYPE(prop, &PyProperty_Type)) {
        return;
    }
    PyObject *fget = PyObject_GetAttr(prop, str.fget);
    PyObject *current = PyObject_GetAttr(spec, str._cached);
    PyObject *fileattr = PyObject_GetAttr(spec, str._set_fileattr);
    int ok = is_importlib_function(fget, str.bootstrap_file)
             && current == Py_None && fileattr == Py_True;
    Py_XDECREF(fget);
    Py_XDECREF(current);
    Py_XDECREF(fileattr);
    PyObject *ext = ok ? PyObject_GetAttr(bootstrap, str._bootstrap_external)
                       : NULL;
    PyObject *cached = (ext == external)
                       ? cached_path(interp, external, origin) : NULL;
    if (cached != NULL && PyObject_SetAttr(spec, str._cached, cached) < 0) {
        PyErr_Clear();   /* the property makes it on first use */
    }
    PyErr_Clear();
    Py_XDECREF(ext);
    Py_XDECREF(cached);
}

/* Whether sys.meta_path starts with the three default finders, whose
   methods the Python search runs are importlib's own, and the first two
   decline 'name'.  If so, *file_finder and *source_loader are set (new
   references) to importlib's FileFinder and SourceFileLoader. */
static int
default_finders(PyInterpreterState *interp, PyObject *bootstrap,
                PyObject *external, PyObject *imp, PyObject *name,
                PyObject **file_finder, PyObject **source_loader)
{
    int ok = 0;
    PyObject *meta_path = sys_attr(interp, str.meta_path);
    if (meta_path == NULL || !PyList_CheckExact(meta_path)
        || PyList_GET_SIZE(meta_path) < 3)
    {
        goto done;
    }
    PyObject *expected[3] = {str.BuiltinImporter, str.FrozenImporter,
                             str.PathFinder};
    for (int i = 0; i < 3; i++) {
        PyObject *cls = PyObject_GetAttr(i < 2 ? bootstrap : external,
                                         expected[i]);
        int same = (cls != NULL && PyList_GET_ITEM(meta_path, i) == cls);
        Py_XDECREF(cls);
        if (!same) {
            goto done;
        }
    }
    if (!declined_by_builtin_and_frozen(imp, name)) {
        goto done;
    }
    *file_finder = PyObject_GetAttr(external, str.FileFinder);
    *source_loader = PyObject_GetAttr(external, str.SourceFileLoader);
    PyObject *path_finder = PyList_GET_ITEM(meta_path, 2);
    ok = (*file_finder != NULL && *source_loader != NULL
          && PyType_Check(*file_finder)
          && is_importlib_method(PyList_GET_ITEM(meta_path, 0), str.find_spec,
                                 str.bootstrap_file)
          && is_importlib_method(PyList_GET_ITEM(meta_path, 1), str.find_spec,
                                 str.bootstrap_file)
          && is_importlib_method(path_finder, str.find_spec,
                                 str.external_file)
          && is_importlib_method(path_finder, str._get_spec,
                                 str.external_file)
          && is_importlib_method(path_finder, str._path_importer_cache,
                                 str.external_file)
          && is_importlib_method(*file_finder, str.find_spec,
                                 str.external_file));
done:
    Py_XDECREF(meta_path);
    return ok;
}

/* PathFinder.find_spec()'s walk over 'search' (sys.path or the parent's
   __path__) through the FileFinders cached in 'importer_cache': the spec,
   or NULL to leave the search to Python.  Called with the import lock
   held, as _find_spec() holds it while a finder searches. */
static PyObject *
search_entries(PyObject *name, PyObject *search, PyObject *importer_cache,
               PyObject *file_finder, PyObject *source_loader,
               module_keys *keys)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(search); i++) {
        PyObject *entry = Py_NewRef(PyList_GET_ITEM(search, i));
        if (!PyUnicode_CheckExact(entry)) {
            Py_DECREF(entry);
            return NULL;
        }
        if (PyUnicode_GET_LENGTH(entry) == 0) {
            /* PathFinder._path_importer_cache(): '' is the current
               directory */
            Py_SETREF(entry, get_cwd());
            if (entry == NULL) {
                return NULL;
            }
        }
        PyObject *finder;
        int r = PyDict_GetItemRef(importer_cache, entry, &finder);
        Py_DECREF(entry);
        if (r <= 0) {
            return NULL;        /* no finder yet: the path hooks make it */
        }
        if (finder == Py_None) {
            Py_DECREF(finder);
            continue;
        }
        if (!Py_IS_TYPE(finder, (PyTypeObject *)file_finder)) {
            Py_DECREF(finder);
            return NULL;
        }
        PyObject *found = NULL, *smsl = NULL, *spec = NULL;
        entry_result res = search_entry(finder, keys, source_loader,
                                        &found, &smsl);
        if (res == ENTRY_NOTHING) {
            Py_DECREF(finder);
            continue;
        }
        if (res == ENTRY_FOUND && _PyCDS_ArchiveHasSource(name, found)) {
            /* FileFinder._get_spec(loader_class, fullname, path, smsl,
               target), as its find_spec() calls it */
            PyObject *args[6] = {finder, source_loader, name, found, smsl,
                                 Py_None};
            spec = PyObject_VectorcallMethod(str._get_spec, args, 6, NULL);
        }
        Py_XDECREF(found);
        Py_XDECREF(smsl);
        Py_DECREF(finder);
        return spec;
    }
    return NULL;
}

/* The spec the normal search would return, or NULL (no exception) to
   leave the search to Python. */
static PyObject *
find_spec(PyObject *imp, PyObject *name, PyObject *path)
{
    PyInterpreterState *interp = _PyInterpreterState_GET();
    PyObject *bootstrap = interp->imports.importlib;
    PyObject *external = NULL, *search = NULL, *importer_cache = NULL;
    PyObject *file_finder = NULL, *source_loader = NULL, *spec = NULL;
    module_keys keys = {NULL, 0};

    if (bootstrap == NULL) {
        return NULL;
    }
    external = PyObject_GetAttr(bootstrap, str._bootstrap_external);
    if (external == NULL
        || !default_finders(interp, bootstrap, external, imp, name,
                            &file_finder, &source_loader))
    {
        goto done;
    }
    /* PathFinder.find_spec(): path is sys.path or the parent's __path__ */
    search = (path == Py_None) ? sys_attr(interp, &_Py_ID(path))
                               : Py_NewRef(path);
    importer_cache = sys_attr(interp, str.path_importer_cache);
    if (search == NULL || !PyList_CheckExact(search)
        || importer_cache == NULL || !PyDict_CheckExact(importer_cache))
    {
        goto done;
    }
    Py_ssize_t dot = PyUnicode_FindChar(name, '.', 0,
                                        PyUnicode_GET_LENGTH(name), -1);
    if (dot == -2) {
        goto done;
    }
    keys.tail = PyUnicode_Substring(name, dot + 1, PyUnicode_GET_LENGTH(name));
    if (keys.tail == NULL) {
        goto done;
    }
    _PyImport_AcquireLock(interp);
    spec = search_entries(name, search, importer_cache, file_finder,
                          source_loader, &keys);
    _PyImport_ReleaseLock(interp);
    if (spec != NULL) {
        PyObject *origin = PyObject_GetAttr(spec, str.origin);
        if (origin != NULL && PyUnicode_CheckExact(origin)) {
            set_cached(interp, bootstrap, external, spec, origin);
        }
        Py_XDECREF(origin);
        PyErr_Clear();
    }

done:
    if (PyErr_Occurred()) {
        /* the Python search will meet the same problem, and report it */
        PyErr_Clear();
        Py_CLEAR(spec);
    }
    keys_clear(&keys);
    Py_XDECREF(keys.tail);
    Py_XDECREF(external);
    Py_XDECREF(search);
    Py_XDECREF(importer_cache);
    Py_XDECREF(file_finder);
    Py_XDECREF(source_loader);
    return spec;
}

PyObject *
_PyCDS_FindSpec(PyObject *imp, PyObject *name, PyObject *path)
{
    if (!PyUnicode_CheckExact(name)
        /* -vv: the Python finders report each path they try */
        || _PyInterpreterState_GetConfig(_PyInterpreterState_GET())->verbose > 1
        || !_PyCDS_ArchiveHasSource(name, NULL))
    {
        Py_RETURN_NONE;
    }
    if (init_strings() < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *spec = find_spec(imp, name, path);
    if (spec == NULL) {
        Py_RETURN_NONE;
    }
    _PyCDS_SpecsFound++;
    _PyCDS_Log(2, "spec found: %s", PyUnicode_AsUTF8(name));
    return spec;
}
