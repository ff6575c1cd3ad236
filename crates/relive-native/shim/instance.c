/* An instance's attributes, read without changing the instance (entries.rs fingerprints a
 * large dict's entries with it).
 *
 * CPython 3.11+ keeps most instances' attributes inline (a values array beside the object,
 * its keys shared by the class) and makes a real `__dict__` only when asked for one. Asking,
 * as `obj.__dict__` or PyObject_GenericGetDict do, makes it: in a forked snapshot's child that
 * allocates a dict per object and writes to every object's page (a million objects: a second
 * of page copies). Here the values are read where they are, with the internal headers of the
 * version built for; nothing is written, not even a reference count.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
/* 3.13's internal headers have unused parameters: theirs, not ours. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "internal/pycore_object.h"
#include "internal/pycore_dict.h"
#pragma GCC diagnostic pop

/* Up to `max` of `values`' attributes, in their insertion order (the order the dict made of
 * them lists them in): `order[i]` is the index of the i-th in the class's shared keys. */
static Py_ssize_t
inline_attributes(PyTypeObject *tp, PyDictValues *values, Py_ssize_t size, const uint8_t *order, int step,
                  PyObject **keys, PyObject **vals, Py_ssize_t max)
{
    PyDictKeysObject *shared = ((PyHeapTypeObject *)tp)->ht_cached_keys;
    if (shared == NULL) {
        return -2;
    }
    PyDictUnicodeEntry *entries = DK_UNICODE_ENTRIES(shared);
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        int ix = order[i * step];
        PyObject *value = values->values[ix];
        if (value == NULL) {
            continue;
        }
        if (n == max) {
            return -2;
        }
        keys[n] = entries[ix].me_key;
        vals[n] = value;
        n++;
    }
    return n;
}

/* `obj`'s attributes: where they are inline, up to `max` keys and values (borrowed) and their
 * number; else -1, with `*dict` its `__dict__` (borrowed; NULL where it has none). -2: more
 * than `max`, or a layout this code does not know. The GIL is held. */
Py_ssize_t
relive_instance_attributes(PyObject *obj, PyObject **dict, PyObject **keys, PyObject **vals, Py_ssize_t max)
{
    PyTypeObject *tp = Py_TYPE(obj);
    *dict = NULL;
    if (!(tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
        PyObject **slot = _PyObject_GetDictPtr(obj);  /* a computed slot: nothing is made */
        if (slot == NULL) {
            PyErr_Clear();
        }
        *dict = slot != NULL ? *slot : NULL;
        return -1;
    }
#if PY_VERSION_HEX >= 0x030D0000
    PyDictObject *made = _PyObject_ManagedDictPointer(obj)->dict;
    if (made != NULL) {
        *dict = (PyObject *)made;
        return -1;
    }
    if ((tp->tp_flags & Py_TPFLAGS_INLINE_VALUES) && _PyObject_InlineValues(obj)->valid) {
        PyDictValues *values = _PyObject_InlineValues(obj);
        return inline_attributes(tp, values, values->size, get_insertion_order_array(values), 1, keys, vals, max);
    }
    return -1;
#elif PY_VERSION_HEX >= 0x030C0000
    PyDictOrValues dorv = *_PyObject_DictOrValuesPointer(obj);
    if (!_PyDictOrValues_IsValues(dorv)) {
        *dict = dorv.dict;
        return -1;
    }
    PyDictValues *values = _PyDictOrValues_GetValues(dorv);
    /* Before the values: [..., order[1], order[0], size, capacity] (_PyDictValues_AddToInsertionOrder). */
    uint8_t *prefix = (uint8_t *)values;
    return inline_attributes(tp, values, prefix[-2], prefix - 3, -1, keys, vals, max);
#else
    PyDictValues *values = *_PyObject_ValuesPointer(obj);
    if (values == NULL) {
        *dict = *_PyObject_ManagedDictPointer(obj);
        return -1;
    }
    uint8_t *prefix = (uint8_t *)values;
    return inline_attributes(tp, values, prefix[-2], prefix - 3, -1, keys, vals, max);
#endif
}

/* Whether the exact dict `d` holds its items in entries 0..n with no deleted entry among
 * them (a combined table: a dict made by a program, not an instance's split one). Then in
 * 3.11-3.13 PyDict_Next's position is the entry's index, and the i-th item is entry i
 * (entries.rs, items_at). 0 where not, or where the version's layout is not known here. */
int
relive_dict_dense(PyObject *d)
{
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
    PyDictObject *mp = (PyDictObject *)d;
    return mp->ma_values == NULL && mp->ma_keys->dk_nentries == mp->ma_used;
#else
    (void)d;
    return 0;
#endif
}
