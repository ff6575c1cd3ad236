/* relive's window into CPython's frames: what Python code cannot see.
 *
 * Compiled by build.rs against the headers of the interpreter the extension is built for,
 * with Py_BUILD_CORE so that `internal/pycore_frame.h` (the layout of _PyInterpreterFrame)
 * is available: the struct layouts come from the headers, never from constants.
 *
 * Every function takes the GIL as held and a frame object as checked by the caller
 * (relive_is_frame); the Rust side (src/frame.rs) enforces both.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#include "internal/pycore_frame.h"

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#  error "relive's frame shim knows CPython 3.11 to 3.13"
#endif

static _PyInterpreterFrame *
interp_frame(PyObject *frame)
{
    return ((PyFrameObject *)frame)->f_frame;
}

static PyCodeObject *
frame_code(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    return (PyCodeObject *)f->f_executable;
#else
    return f->f_code;
#endif
}

int
relive_is_frame(PyObject *obj)
{
    return PyFrame_Check(obj);
}

/* 1 while the frame runs, waits in a call or is a suspended generator's; 0 once it
 * completed (its data then lives in the frame object, and the stack is gone). */
int
relive_frame_is_live(PyObject *frame)
{
    return interp_frame(frame)->owner != FRAME_OWNED_BY_FRAME_OBJECT;
}

int
relive_frame_nlocalsplus(PyObject *frame)
{
    return frame_code(interp_frame(frame))->co_nlocalsplus;
}

int
relive_frame_stacksize(PyObject *frame)
{
    return frame_code(interp_frame(frame))->co_stacksize;
}

/* Slot `index` of localsplus: locals, cells and free variables first, then the value stack.
 * A borrowed reference, or NULL for an empty slot. */
PyObject *
relive_frame_slot(PyObject *frame, int index)
{
    return interp_frame(frame)->localsplus[index];
}

/* The function the frame runs: a borrowed reference the frame holds for its whole life. */
PyObject *
relive_frame_function(PyObject *frame)
{
#if PY_VERSION_HEX >= 0x030C0000
    return interp_frame(frame)->f_funcobj;
#else
    return (PyObject *)interp_frame(frame)->f_func;
#endif
}

/* The stack depth as the frame records it: stacktop minus the locals. Only trustworthy at a
 * line event of the frame itself and in a suspended generator. */
int
relive_frame_stacktop(PyObject *frame)
{
    _PyInterpreterFrame *f = interp_frame(frame);
    return f->stacktop - frame_code(f)->co_nlocalsplus;
}

/* 1 when C code called this frame: the interpreter loop was entered afresh for it, so a C
 * function (a builtin, a slot, a trampoline) sits between it and the Python frame before. */
int
relive_frame_called_from_c(PyObject *frame)
{
    _PyInterpreterFrame *f = interp_frame(frame);
#if PY_VERSION_HEX >= 0x030C0000
    _PyInterpreterFrame *previous = f->previous;
    if (previous == NULL) {
        return 1;
    }
    /* The entry frame of a C call is a shim owned by the C stack; 3.13 also pushes a shim
     * code (`__init__` cleanup) before an inlined `__init__`: both are incomplete frames. */
    return previous->owner == FRAME_OWNED_BY_CSTACK || _PyFrame_IsIncomplete(previous);
#else
    return f->is_entry ? 1 : 0;
#endif
}

/* The generator (or coroutine) whose frame this is, while the frame is live: a borrowed
 * reference (the generator owns the frame, so it lives as long as the frame runs). NULL for
 * a frame no generator owns. */
PyObject *
relive_frame_generator(PyObject *frame)
{
    _PyInterpreterFrame *f = interp_frame(frame);
    if (f->owner != FRAME_OWNED_BY_GENERATOR) {
        return NULL;
    }
    return (PyObject *)_PyFrame_GetGenerator(f);
}
