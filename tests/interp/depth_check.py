"""Run a script and compare, at every one of its line events, the statically computed stack
depth (relive.interp.stack) with the depth CPython recorded (valid at line events).

    depth_check.py SCRIPT [--everywhere]
        prints {"events": N, "mismatches": [...]} as JSON on stderr's last line; with
        --everywhere, checks the line events of all code (the standard library's too)
"""

import json
import runpy
import sys

from relive import _native
from relive.interp.stack import StackLayout

script = sys.argv[1]
everywhere = "--everywhere" in sys.argv
events = 0
mismatches = []


def check(frame):
    global events
    code = frame.f_code
    if code.co_filename != script and not (everywhere and "/relive/" not in code.co_filename):
        return
    events += 1
    layout = StackLayout.of(code)
    static = layout.depth_at(frame.f_lasti)
    recorded = _native.frame_stacktop(frame)
    if static != recorded:
        mismatches.append([code.co_qualname, frame.f_lasti, layout.instruction_at(frame.f_lasti).opname, static, recorded])


if sys.version_info >= (3, 12):
    mon = sys.monitoring
    tool = next(t for t in (5, 4, 3, 2, 1) if mon.get_tool(t) is None)
    mon.use_tool_id(tool, "depth-check")
    mon.register_callback(tool, mon.events.LINE, lambda code, line: check(sys._getframe(1)))
    mon.set_events(tool, mon.events.LINE)
else:
    def trace(frame, event, arg):
        if event == "line":
            check(frame)
        return trace
    sys.settrace(trace)
try:
    runpy.run_path(script, run_name="__main__")
finally:
    sys.settrace(None)
    if sys.version_info >= (3, 12):
        mon.set_events(tool, 0)
    sys.stdout.flush()
    print(json.dumps({"events": events, "mismatches": mismatches}), file=sys.stderr)
