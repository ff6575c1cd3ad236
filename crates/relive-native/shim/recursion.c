/* Room for deep recursion in the calling thread: relive pickles deep structures (a linked
 * list of 100 000 nodes) in a thread of its own with a large stack, and raises that
 * thread's recursion counters to match.
 *
 * The pickler recurses once per level of nesting, counting each level against the
 * thread's recursion limit: on 3.11 the one `sys.setrecursionlimit` sets (for every thread
 * of the program at once), on 3.12 and 3.13 a fixed C limit that nothing raises. Both
 * counters live in the thread's own PyThreadState, so moving them by `extra` affects this
 * thread alone, and moving them back by the same amount restores them exactly. The caller
 * must hold the GIL and make sure the thread's stack has room for `extra` more levels.
 */
#include <Python.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#  error "relive's recursion shim knows CPython 3.11 to 3.13"
#endif

void
relive_add_recursion_room(int extra)
{
    PyThreadState *tstate = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030C0000
    tstate->c_recursion_remaining += extra;
    tstate->py_recursion_remaining += extra;
    tstate->py_recursion_limit += extra;
#else
    /* The depth is limit - remaining: raising both keeps it, and a check against the
     * interpreter's limit (in _Py_CheckRecursiveCall) sees this thread's raised one. */
    tstate->recursion_remaining += extra;
    tstate->recursion_limit += extra;
#endif
}
