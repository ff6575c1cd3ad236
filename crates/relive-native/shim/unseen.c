/* relive's code in the program's thread, unseen by the program.
 *
 * relive runs Python code inside the program's main thread: its line-event callback, its
 * signal handler, the calls it queues for the main thread, its at-fork hook. Under plain
 * `python` none of that exists, so the program must not notice it:
 *
 * - its tracers and profilers (`sys.settrace`, `sys.setprofile`, `sys.monitoring` tools)
 *   see no event of relive's code: the code runs as CPython runs trace functions, with
 *   `PyThreadState_EnterTracing`;
 * - its recursion budget is not spent: the callback may come at the deepest frame the
 *   program can reach, so relive's code gets room of its own above the limit, given back
 *   when it returns.
 *
 * `Unseen(func)` is a callable that runs `func` that way. It is called through vectorcall,
 * which CPython enters without a recursion check: even a program at its very limit can call
 * it. With `chain`, a non-None result of `func` is then called with the same arguments, as
 * the program's own code, seen and counted as it would be (a signal relay returns the
 * program's handler: its frame's caller is the program's interrupted frame, as without relive).
 *
 * A signal relive acts on after a snapshot taken in a callback is delivered again once the
 * callback has returned (relive_deliver_after), so the program's handler runs from the
 * program's frame there too.
 *
 * The recursion counters are per thread (PyThreadState); their names change with the version.
 */
#include <Python.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include "structmember.h"

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#  error "relive's unseen shim knows CPython 3.11 to 3.13"
#endif

/* Room for relive's own frames above the program's limit: as much as the default limit
 * again, enough to pickle what a snapshot holds; C recursion (3.12+: counted apart, and a
 * guard of the C stack) gets only what entering relive's Python code takes. */
#define HEADROOM_PY 1000
#define HEADROOM_C 100

#if PY_VERSION_HEX >= 0x030D0000
#  define C_LIMIT Py_C_RECURSION_LIMIT
#elif PY_VERSION_HEX >= 0x030C0000
#  define C_LIMIT C_RECURSION_LIMIT
#endif

/* The budgets this thread has spent: frames, and on 3.12+ C recursion (3.11 counts both in
 * the first). Credits given by relive_recursion_spare count as unspent. */
void
relive_recursion_used(int *py, int *c)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030C0000
    *py = ts->py_recursion_limit - ts->py_recursion_remaining;
    *c = C_LIMIT - ts->c_recursion_remaining;
#else
    *py = ts->recursion_limit - ts->recursion_remaining;
    *c = 0;
#endif
}

/* Make `py` frames (and `c` C recursions) of this thread free: they no longer count
 * against the limit. Negative numbers take the room back. `sys.setrecursionlimit` keeps the
 * credit (it recomputes the remaining budget from the depth, which the credit lowered). */
void
relive_recursion_spare(int py, int c)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030C0000
    ts->py_recursion_remaining += py;
    ts->c_recursion_remaining += c;
#else
    (void)c;
    ts->recursion_remaining += py;
#endif
}

/* Signals whose Python-level handling waits until relive's outermost callback has returned:
 * blocked in this thread and pending, then unblocked, so that CPython runs the program's
 * handler at its next bytecode, in the program's own frame. Touched with the GIL held, by
 * the thread that runs Python signal handlers (the main thread). */
static _Thread_local sigset_t deferred;
static _Thread_local int deferred_any = 0;
static _Thread_local int unseen_depth = 0;  /* per thread: relive's own threads run unseen throughout */

/* Deliver `signum` to this thread once relive's callbacks have returned (at once when
 * none is running). 0, or an errno. */
int
relive_deliver_after(int signum)
{
    if (unseen_depth > 0) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, signum);
        int err = pthread_sigmask(SIG_BLOCK, &one, NULL);
        if (err != 0) {
            return err;
        }
        if (!deferred_any) {
            sigemptyset(&deferred);
            deferred_any = 1;
        }
        sigaddset(&deferred, signum);
    }
    return pthread_kill(pthread_self(), signum);
}

static void
release_deferred(void)
{
    if (unseen_depth == 0 && deferred_any) {
        sigset_t pending = deferred;
        deferred_any = 0;
        pthread_sigmask(SIG_UNBLOCK, &pending, NULL);  /* delivered here, handled at the next bytecode */
    }
}

typedef struct {
    PyObject_HEAD
    PyObject *func;
    int chain;
    vectorcallfunc vectorcall;
} Unseen;

static PyObject *
unseen_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Unseen *u = (Unseen *)self;
    PyThreadState *ts = PyThreadState_Get();
    PyThreadState_EnterTracing(ts);
    relive_recursion_spare(HEADROOM_PY, HEADROOM_C);
    unseen_depth++;
    PyObject *result = PyObject_Vectorcall(u->func, args, nargsf, kwnames);
    unseen_depth--;
    relive_recursion_spare(-HEADROOM_PY, -HEADROOM_C);
    PyThreadState_LeaveTracing(ts);
    release_deferred();
    if (result == NULL || !u->chain || result == Py_None) {
        return result;
    }
    PyObject *then = PyObject_Vectorcall(result, args, nargsf, kwnames);
    Py_DECREF(result);
    return then;
}

static int
unseen_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((Unseen *)self)->func);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
unseen_clear(PyObject *self)
{
    Py_CLEAR(((Unseen *)self)->func);
    return 0;
}

static void
unseen_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    unseen_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *
unseen_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<relive unseen %R>", ((Unseen *)self)->func);
}

static PyMemberDef unseen_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Unseen, vectorcall), READONLY, NULL},
    {"__wrapped__", T_OBJECT, offsetof(Unseen, func), READONLY, NULL},
    {NULL},
};

static PyType_Slot unseen_slots[] = {
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_traverse, unseen_traverse},
    {Py_tp_clear, unseen_clear},
    {Py_tp_dealloc, unseen_dealloc},
    {Py_tp_repr, unseen_repr},
    {Py_tp_members, unseen_members},
    {0, NULL},
};

static PyType_Spec unseen_spec = {
    .name = "relive._native.Unseen",
    .basicsize = sizeof(Unseen),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = unseen_slots,
};

/* The type, once per process (a new reference each call). */
PyObject *
relive_unseen_type(void)
{
    static PyObject *type = NULL;
    if (type == NULL) {
        type = PyType_FromSpec(&unseen_spec);
        if (type == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(type);
}

/* A new Unseen calling `func` (a new reference, or NULL with an exception set). */
PyObject *
relive_unseen_new(PyObject *func, int chain)
{
    PyObject *type = relive_unseen_type();
    if (type == NULL) {
        return NULL;
    }
    Unseen *u = PyObject_GC_New(Unseen, (PyTypeObject *)type);
    Py_DECREF(type);  /* each instance holds its own reference (PyObject_GC_New took one) */
    if (u == NULL) {
        return NULL;
    }
    u->func = Py_NewRef(func);
    u->chain = chain;
    u->vectorcall = unseen_vectorcall;
    PyObject_GC_Track((PyObject *)u);
    return (PyObject *)u;
}

/* Run a module's code as `python` runs a script's: as the first frame of the thread, with
 * nothing below it. relive's frames (its command line, the runner) stay on the C stack and
 * unwind as before, but the program's first frame has no caller: `f_back`,
 * `traceback.print_stack()`, `inspect.stack()` and `warnings`' stack levels see only the
 * program. An exception propagates out as from `exec`. */
PyObject *
relive_run_first(PyObject *code, PyObject *globals)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    struct _PyInterpreterFrame *below = ts->current_frame;
    ts->current_frame = NULL;
#else
    struct _PyInterpreterFrame *below = ts->cframe->current_frame;
    ts->cframe->current_frame = NULL;
#endif
    PyObject *result = PyEval_EvalCode(code, globals, globals);
    /* The eval loop left this thread's current frame as it found it (NULL): the frames
     * below are back where they were. */
#if PY_VERSION_HEX >= 0x030D0000
    ts->current_frame = below;
#else
    ts->cframe->current_frame = below;
#endif
    return result;
}
