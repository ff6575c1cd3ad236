"""How a snapshot is written: by a forked child where fork is possible, else copied then
written by a thread, or inline.

Where fork is possible, every snapshot is written by a forked child (``background``), so
that the program's own pickling hooks (``__reduce__``, ``__getstate__``) never run in the
program; but a timer or --at snapshot may be copied instead (below) where --mode auto
measured that cheaper and none of those hooks would run (``modes``). A timer snapshot's
child works while the program goes on (``Writer.take_in_background``); for a signal's
action and ``relive.checkpoint()`` returning its id the program waits for the child (which
the fork froze at the trigger's point), for their snapshot must be committed before the
program goes on (``Writer.take``).
The exit and exception snapshots' child is detached: the program ends as soon as it is
forked, and it commits afterwards, leaving a marker that readers wait for
(``relive.writing``); with --wait-exit, $RELIVE_WAIT_EXIT=1 or under Slurm (which kills
a job's processes when it ends) the program waits for it too. Without fork (CUDA is
initialized, --mode thread) a timer or --at snapshot is copied during a pause and written
by a thread of relive's (``copying``), and the others are written in the program's process,
as all are with --mode inline. Each stops at --snapshot-timeout (``time_limit`` for the
inline ones and for the pause; a thread cannot be stopped, only no longer waited for).
Here too: opening the store, each snapshot's request (``save`` writes it), charging timer
and --at snapshots to the overhead budget (``budget``: it stretches the timer's interval and
spaces --at's), and reporting each failure once. Called by ``triggers`` with the
snapshotting lock held, and by the thread that waits for a child.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from relive import _native
from relive.errors import StoreError
from relive.capture import frames as program_frames
from relive.capture import background, copying, process, save, streams
from relive.capture.background import Background
from relive.capture.budget import Budget, usable_cores
from relive.capture.clock import Clock
from relive.capture.modes import PROBE_ENOUGH, AutoMode
from relive.capture.write_probe import PROBE_S, WriteProbe
from relive.capture.time_limit import SnapshotTimedOut, TimeLimit, exceeded
from relive.report import warn_once
from relive.state import gpu_copies
from relive.state.pickler import ProgramHook
from relive.writing import Marker

if TYPE_CHECKING:
    from relive.capture.options import CaptureOptions

_NOT_RESUMABLE = {
    "exit": "the program had ended",
    "exception": "taken where an uncaught exception was raised: the program was ending",
}
# --keep-last forgets a run's older snapshots once this many have piled up beyond the last N.
_FORGET_BATCH = 5
# A remote store that failed is tried again after 5 s, then 10, 20, ... at most 5 minutes.
_STORE_BACKOFF_S = (5.0, 300.0)
_CHILD_MARGIN_S = 5.0  # past its time limit, a child is killed: waiting longer means it is lost
# The snapshots charged to the overhead budget: those the program did not ask for in its own
# code, and that come again and again (exit, a crash, a signal, relive.checkpoint() are not).
_BUDGETED = ("timer", "at")
_FORKED, _DETACHED, _FAILED, _NOT_FORKED = "forked", "detached", "failed", "not forked"  # how starting a child went
_DETACHABLE = tuple(_NOT_RESUMABLE)  # the program's end: nothing of it comes after the fork


class Writer:
    """Writes the snapshots of one run into its store, one at a time."""

    def __init__(self, options: CaptureOptions, run: Any, main_dict: dict[str, Any],
                 files: process.OpenFiles, clock: Clock, parent: str | None = None) -> None:
        self.options = options
        self.run = run
        self.snapshots: list[save.SnapshotResult] = []
        self._main_dict = main_dict
        self._files = files
        self._clock = clock  # the timer: its interval is stretched to keep within the budget
        self._store: Any = None
        # After the store failed: when to try it again, and the wait after the next failure
        # (a server that is down must not cost the program a wait at every snapshot).
        self._store_retry_at = 0.0
        self._store_backoff_s = _STORE_BACKOFF_S[0]
        self._kept: list[str] = []  # this run's committed snapshots, for --keep-last
        self._remote = options.store.startswith("s3://")  # an object store, not a directory
        self._store_behind = False  # forked snapshots wrote packs this handle has not read
        self._codes = save.CodeRecords()
        self._seq = 0
        self._parent = parent  # the snapshot a resumed run continues from
        self._parent_cost: dict[str, float] | None = None  # what the parent (a forked snapshot) cost the program
        self._stretched_because: str | None = None  # why the timer's interval is past --every
        self._child_trigger = "timer"  # what the running (or last) snapshot child was forked for
        self._child_mode = "fork"  # and how: a forked child, or a thread writing copies ("thread")
        self._written_cpu_s = 0.0  # the CPU of relive's writing threads: not the program's own
        self._child_outcome: dict[str, Any] = {}  # the last child's outcome
        self._background = Background(options.snapshot_timeout, options.max_memory, self._background_done)
        self._auto = AutoMode()  # --mode auto: fork or copy, each timer snapshot
        # --mode auto: how much memory the program rewrites, in the second before the first
        # timer snapshot (``write_probe``), for the choice of fork or copy for that one.
        self._probe: WriteProbe | None = None
        if options.mode == "auto" and options.every > 0 and background.available():
            self._probe = WriteProbe(options.every - PROBE_S, PROBE_ENOUGH)
        if options.max_memory is not None:  # the pinned host copies of GPU tensors too
            gpu_copies.MIRRORS.limit = options.max_memory
        self._budget = Budget(options.every, options.overhead, usable_cores(),
                              program_cpu=lambda: time.process_time() - self._written_cpu_s)
        self._at_ready = 0.0  # when the budget allows the next --at snapshot (time.monotonic)

    @property
    def busy(self) -> bool:
        """A snapshot child is running."""
        return self._background.busy

    def wait(self) -> bool:
        """Until no snapshot child runs: False if one still runs when its time limit bounds the wait."""
        return self._background.wait(self._child_wait_s())

    def _request(self, trigger: str, frames: list[program_frames.FrameView], mode: str,
                 extra: dict[str, Any], point: Any = None, signum: int | None = None) -> save.SnapshotRequest:
        if signum is not None:
            extra["signal"] = signal.Signals(signum).name
        if self._parent_cost is not None:
            extra["parent_cost"], self._parent_cost = self._parent_cost, None
        if self.options.every > 0:  # the timer's interval in force, and why when stretched
            extra["interval_s"] = round(self._clock.interval, 3)
            if self._stretched_because and self._clock.interval > self.options.every:
                extra["stretched_because"] = self._stretched_because
        self._seq += 1
        positions = self._files.flush()  # here, in the program's process: never in a forked child
        if trigger not in _NOT_RESUMABLE:  # at exit the interpreter flushes them a moment later
            streams.flush()
        return save.SnapshotRequest(
            run_id=self.run.id, seq=self._seq, parent=self._parent, trigger=trigger, mode=mode,
            frames=frames, main_dict=self._main_dict, exclude=self.options.exclude, extra=extra,
            process=process.state(self.run.cwd, self._files, positions), resume=point, not_resumable=_NOT_RESUMABLE.get(trigger),
            file_positions=positions)

    def take(self, trigger: str, frames: list[program_frames.FrameView], point: Any,
             extra: dict[str, Any], signum: int | None = None) -> str | None:
        """Write one snapshot while the program waits for it, in a forked child where fork is
        possible, else in this process; stopped at --snapshot-timeout either way. Returns its
        id; never raises: a failure is reported once and skipped. ``signum``: the signal a
        "signal" snapshot is taken for. The exit and exception snapshots' child is not waited
        for unless asked (``waits_for_exit``): None then, its id is known only to the store."""
        if self._use_fork():
            started = self._start_child(trigger, frames, point, extra, signum, detach=self._detaches(trigger))
            if started in (_FAILED, _DETACHED):
                return None  # a detached child commits after the program's end: readers wait for it
            if started == _FORKED:
                return self._wait_for_child()
        return self._take_inline(trigger, frames, point, extra, signum)

    def _detaches(self, trigger: str) -> bool:
        """Whether this snapshot's child commits after the program has ended, unwaited for."""
        return trigger in _DETACHABLE and not waits_for_exit(self.options.wait_exit)

    def _take_inline(self, trigger: str, frames: list[program_frames.FrameView], point: Any,
                     extra: dict[str, Any], signum: int | None) -> str | None:
        """Write one snapshot in this process, stopped at --snapshot-timeout."""
        started = time.perf_counter()
        try:
            store = self._open_store(trigger)
            if store is None:
                return None
            if self._store_behind:
                self._store_behind = False
                store.refresh()  # what forked snapshots wrote is not written again
            request = self._request(trigger, frames, "inline", extra, point, signum)
            with TimeLimit(self.options.snapshot_timeout):
                result = save.write(store, request, self._codes)
        except SnapshotTimedOut:  # raised in the program's hook, or in relive's code around it
            self._failed(RuntimeError(exceeded(self.options.snapshot_timeout)))
            return None
        except Exception as exc:  # never into the program: the next snapshot covers this one
            self._failed(exc, time.perf_counter() - started)
            return None
        self._parent = result.id
        self.snapshots.append(result)
        if trigger in _BUDGETED:
            self._spent(result.seconds, result.new_raw_bytes, result.state_bytes)
        return result.id

    def _spent(self, seconds: float, new_bytes: int, state_bytes: int) -> None:
        """Keep timer snapshots within the overhead budget: the interval grows until what the
        next snapshot will cost is at most --overhead percent of it (never below --every),
        The next manifests say which interval is in force, and why (``_request``)."""
        interval, self._stretched_because = self._budget.after(seconds, new_bytes, state_bytes)
        if interval is not None:
            self._clock.set_interval(interval)
        self._at_ready = time.monotonic() + self._budget.gap

    def due(self) -> bool:
        """Whether a --at snapshot fits the overhead budget now: none is being written, and
        the last budgeted one's cost has been earned back. With --overhead 0, always (it
        waits for the one being written)."""
        if self.options.overhead <= 0:
            return True
        return not self.busy and time.monotonic() >= self._at_ready

    def _use_fork(self) -> bool:
        mode = self.options.mode
        if mode in ("inline", "thread"):
            return False
        if background.available():
            return True
        if mode == "fork":
            warn_once("fork", "fork is unavailable or unsafe here (CUDA is initialized): timer snapshots are "
                              "copied and written by a thread, the others in the program's process")
        return False

    def take_in_background(self, trigger: str, frames: list[program_frames.FrameView], point: Any,
                           extra: dict[str, Any] | None = None) -> bool:
        """Fork a child that writes the snapshot while the program goes on, or copy it and
        have a thread write it (without fork, or where --mode auto finds that cheaper:
        ``modes``); False if it has to be taken inline instead. ``extra``: Manifest fields
        the trigger adds (a timer snapshot's ``late_s``)."""
        extra = extra or {}
        if self._use_fork():
            started = time.perf_counter()  # a copy that gives up is in the fork's pause
            if self.options.mode == "auto":
                if self._probe is not None:
                    self._auto.probed(self._probe.result())
                    self._probe = None
                self._auto.first_fork_copies(self._budget.first_copies_s())
                if self._auto.copies_next(self._clock.interval) \
                        and self._start_thread(trigger, frames, point, dict(extra), program_hooks=False):
                    return True
            return self._start_child(trigger, frames, point, dict(extra), since=started) != _NOT_FORKED
        if self._use_thread():
            self._start_thread(trigger, frames, point, dict(extra))
            return True
        return False

    def _use_thread(self) -> bool:
        """Copy-then-write: asked, or where fork cannot be used and inline was not asked."""
        return self.options.mode != "inline"

    def _start_thread(self, trigger: str, frames: list[program_frames.FrameView], point: Any,
                      extra: dict[str, Any], program_hooks: bool = True) -> bool:
        """Pickle and copy the snapshot now (``copying``), and have a thread of relive's
        write it while the program goes on. Never raises: a failure is reported once.
        Without ``program_hooks`` (--mode auto chose it), the program's own pickling hooks
        must not run here: where one would, or where the copy fails, nothing is written and
        False says to fork instead (and ``modes`` forks from then on); so it does where the
        copy would pass ``AutoMode.copy_limit`` (a fork's pause does not grow with the bytes)."""
        started = time.perf_counter()
        request = None
        try:
            store = self._open_store(trigger)
            if store is None:
                return True
            if self._store_behind:
                self._store_behind = False
                store.refresh()  # what forked snapshots wrote is not written again
            request = self._request(trigger, frames, "thread", extra, point)
            request.program_hooks = program_hooks
            staging = copying.Staging(store, copying.copies_limit(self.options.max_memory),
                                      at_most=None if program_hooks else self._auto.copy_limit(),
                                      watch_pages=background.may_watch_pages())
            with TimeLimit(self.options.snapshot_timeout):
                prepared = save.prepare(staging, request, self._codes)
        except SnapshotTimedOut:
            self._failed(RuntimeError(exceeded(self.options.snapshot_timeout)))
            return True
        except ProgramHook as exc:  # raised before the hook ran: nothing of the program's has changed
            self._auto.rule_out_copies(f"the program's own {exc} would run in its process")
            self._unrequest(request)
            return False
        except copying.TooMuchToCopy:  # raised before copying more: a fork writes this one
            self._auto.gave_up(time.perf_counter() - started)
            self._unrequest(request)
            return False
        except Exception as exc:  # never into the program: the next snapshot covers this one
            if program_hooks or request is None or isinstance(exc, (StoreError, OSError)):
                self._failed(exc, time.perf_counter() - started)
                return True
            self._auto.rule_out_copies(f"a copy failed: {exc}")
            self._unrequest(request)
            return False
        # How busy the program was up to here (its pause in it, a small share of an interval).
        if trigger in _BUDGETED:
            self._budget.forking()
        request.pause_s = time.perf_counter() - started
        prepared.started = started  # its write_s: from the pause's start to the commit, the pause within it
        # The thread needs only what was copied: the program's frames and objects are not
        # kept alive by it (a tensor the program drops meanwhile is freed).
        request.frames, request.main_dict, request.resume, request.process = [], {}, None, None
        forget = self._to_forget()

        def work() -> dict[str, Any]:
            cpu = time.thread_time(), _native.workers_cpu_seconds(), _native.idle_cpu_seconds()
            try:
                prepared.state.new_bytes += staging.write()
                idle_cpu_s = _native.idle_cpu_seconds() - cpu[2]  # compressing on idle cores: in cpu_s, not charged
                cpu_s = time.thread_time() - cpu[0] + _native.workers_cpu_seconds() - cpu[1] + idle_cpu_s
                costs = {"memory_bytes": staging.copied_bytes, "cpu_s": round(cpu_s, 6),
                         "idle_cpu_s": round(idle_cpu_s, 6), "unread_bytes": staging.unread_bytes}
                result = save.finish(store, prepared, costs, staging.resolve)
                if forget:
                    _forget(store, forget)
            except (StoreError, OSError) as exc:
                return {"ok": False, "store_error": str(exc)}
            return {"id": result.id, "new_bytes": result.new_bytes, "new_raw_bytes": result.new_raw_bytes,
                    "state_bytes": result.state_bytes, "skipped": result.skipped, "seconds": result.seconds,
                    "pause_s": request.pause_s, "cpu_s": cpu_s, "idle_cpu_s": idle_cpu_s}

        self._child_trigger, self._child_mode = trigger, "thread"
        self._background.start_thread(work)
        return True

    def _unrequest(self, request: save.SnapshotRequest | None) -> None:
        """A request that was not written after all: its number and its parent's cost go to
        the next one."""
        if request is None:
            return
        self._seq -= 1
        self._parent_cost = request.extra.get("parent_cost", self._parent_cost)

    def _start_child(self, trigger: str, frames: list[program_frames.FrameView], point: Any,
                     extra: dict[str, Any], signum: int | None = None, detach: bool = False,
                     since: float | None = None) -> str:
        """Fork a child that writes the snapshot: _FORKED, _DETACHED (``detach``: it commits
        after the program's end), _FAILED (no store, or no request: reported), or
        _NOT_FORKED (fork itself failed: the caller writes it inline). ``since``: when the
        program's pause began (``perf_counter``), where it began before this call."""
        started, started_at = (time.perf_counter() if since is None else since), time.time()
        # A remote store is opened by the child only: its requests never pause the program.
        remote = self._remote
        try:
            if not self._store_due(trigger) or (not remote and self._open_store(trigger) is None):
                return _FAILED  # no store: nothing to do, inline would fail the same way
            request = self._request(trigger, frames, "fork", extra, point, signum)
            request.measure_memory = not detach
        except Exception as exc:
            self._failed(exc)
            return _FAILED
        path, codes, budgeted = self.options.store, self._codes, trigger in _BUDGETED
        # What the program's store handle knows was hashed (by earlier children, or by its own
        # copies) goes to the child, which need not hash those chunks again, and what the
        # child hashed comes back: the next child, and the program's copies under --mode auto,
        # need not hash or copy those chunks (``Store.proven_chunks``). Read before the fork:
        # the child opens a handle of its own.
        proven = b"" if remote or self._store is None else self._store.proven_chunks()
        run_id, run_json = self.run.id, self.run.to_json()
        forget = self._to_forget()
        marker = Marker(path, run_id, trigger, self.options.snapshot_timeout) if detach else None

        def work() -> dict[str, Any]:
            if budgeted:  # the program's share: until the fork (others wait for the whole write)
                request.pause_s = time.perf_counter() - started
            elif marker is not None:  # until the fork too: the marker is written at once after it
                request.pause_s = max(0.0, marker.started - started_at)
            request.idle_cpu_from = _native.idle_cpu_seconds()  # the parent's count, inherited
            try:
                store = _native.Store.open(path, create=remote)
                if remote:
                    store.put_run(run_id, run_json)
                if proven:
                    store.add_proven_chunks(proven)
                result = save.write(store, request, codes)
                if forget:
                    _forget(store, forget)
            except (StoreError, OSError) as exc:
                # The store's fault, not this snapshot's: told apart in the program's process,
                # which reports each fault once ("ok" here overrides the child's own).
                return {"ok": False, "store_error": str(exc)}
            done = {"id": result.id, "new_bytes": result.new_bytes, "new_raw_bytes": result.new_raw_bytes,
                    "state_bytes": result.state_bytes, "skipped": result.skipped, "seconds": result.seconds,
                    "pause_s": request.pause_s, "idle_cpu_s": _native.idle_cpu_seconds() - request.idle_cpu_from}
            if not remote:
                done["proven"] = store.proven_chunks().hex()
            return done

        if budgeted:
            self._budget.forking()
        self._child_trigger, self._child_mode = trigger, "fork"
        # The chunks of large buffers known unchanged since the last copied snapshot (the
        # kernel watched their pages): the child keeps them by id rather than read them all.
        lends = self._store is not None and not remote
        if lends:
            self._store.lend_watch_to_child()
        try:
            forked = self._background.start(work, marker)  # the child never returns from it
        finally:
            if lends:
                _native.take_watch_back()
        if forked is None:
            return _NOT_FORKED
        if forked == background.DETACHED:
            return _DETACHED
        if budgeted:
            self._budget.forked()
        return _FORKED

    def _wait_for_child(self) -> str | None:
        """Until the child forked for this snapshot is done (its time limit bounds the wait):
        the id of the snapshot it committed, or None."""
        if not self._background.wait(self._child_wait_s()):
            return None
        outcome = self._child_outcome
        return outcome.get("id") if outcome.get("ok") else None

    def _child_wait_s(self) -> float | None:
        """How long to wait for a running child: it is killed at its time limit, so one that
        outlives this is lost (None: no limit a wait can hold)."""
        wait = self.options.snapshot_timeout + _CHILD_MARGIN_S
        return wait if wait < threading.TIMEOUT_MAX else None

    def _background_done(self, outcome: dict[str, Any]) -> None:
        """A forked snapshot ended (called in the thread that waited for it)."""
        self._child_outcome = outcome
        try:
            self._record_outcome(outcome)
        except Exception as exc:  # never a traceback from relive's thread into the program's output
            self._failed(exc)

    def _record_outcome(self, outcome: dict[str, Any]) -> None:
        budgeted = self._child_trigger in _BUDGETED  # only these are charged to the budget
        forked = self._child_mode == "fork"
        # A thread's writing shares the program's process: no page copies, and its CPU is not the program's.
        copies_s = self._budget.child_ended() if budgeted and forked else 0.0
        if not forked:
            self._written_cpu_s += outcome.get("cpu_s", 0.0)
        if outcome.get("ok"):
            self._store_behind = forked
            if outcome.get("proven") and self._store is not None:  # what the child hashed
                self._store.add_proven_chunks(bytes.fromhex(outcome["proven"]))
            self._parent = outcome["id"]
            self._kept.append(outcome["id"])
            self.snapshots.append(save.SnapshotResult(
                outcome["id"], outcome["new_bytes"], outcome["state_bytes"], outcome["skipped"], outcome["seconds"],
                outcome["new_raw_bytes"]))
            if not budgeted:
                return
            # Compressing on idle cores (``idle_cpu_s``, within ``cpu_s``) took nothing from the program.
            cpu_s = max(0.0, outcome.get("cpu_s", 0.0) - outcome.get("idle_cpu_s", 0.0))
            pause_s = outcome.get("pause_s", 0.0)
            charged = self._budget.forked_cost(pause_s, cpu_s, copies_s)
            covered_s = self._budget.covered_s  # the budget takes it in: read first
            # New bytes before compression: stored ones depend on whether a core was free.
            self._spent(charged, outcome["new_raw_bytes"], outcome["state_bytes"])
            self._auto.measured(self._child_mode, charged, pause_s, outcome["new_raw_bytes"] - self._budget.grown,
                                covered_s, floor_s=pause_s + copies_s if forked else None,
                                new_bytes=outcome["new_raw_bytes"])
            # Known only now, in the program's process: the next manifest carries it.
            self._parent_cost = {"copies_s": round(copies_s, 6), "charged_s": round(charged, 6),
                                 "interval_s": round(self._clock.interval, 3)}
        elif "store_error" in outcome:
            self._failed(StoreError(outcome["store_error"]))
            return
        if outcome.get("ok"):
            self._store_backoff_s = _STORE_BACKOFF_S[0]
        else:
            self._failed(RuntimeError(outcome.get("error", "unknown error")))

    def _failed(self, exc: BaseException, cost_s: float = 0.0) -> None:
        """One line per fault: a store that cannot be written is one fault, whether opening
        it or writing to it failed, and however many snapshots it costs. ``cost_s``: what
        the failed try cost the program (an inline write to a server that does not answer)."""
        self._store = None  # open it afresh next time (it may have been removed, or repaired)
        if isinstance(exc, (StoreError, OSError)):
            if self._remote:
                wait = self._store_backoff_s
                if self.options.overhead > 0:  # the tries, like the snapshots, within the budget
                    wait = max(wait, cost_s * 100 / self.options.overhead)
                self._store_retry_at = time.monotonic() + wait
                self._store_backoff_s = min(self._store_backoff_s * 2, _STORE_BACKOFF_S[1])
            self._cannot_write(exc)
            return
        warn_once("snapshot", f"a snapshot failed and was skipped: {exc}; the program goes on, "
                              "and relive tries again at the next snapshot")

    def _cannot_write(self, exc: BaseException) -> None:
        warn_once("store", f"cannot write snapshots to {self.options.store}, so this one is skipped: {exc}; "
                           "the program goes on, and relive tries again at the next snapshot")

    def _to_forget(self) -> list[str]:
        """--keep-last: this run's snapshots beyond the last N, in batches (each prune reads
        every manifest of the store, so not at every snapshot)."""
        keep = self.options.keep_last
        if keep is None or len(self._kept) < keep + _FORGET_BATCH:
            return []
        forget, self._kept = self._kept[:-keep], self._kept[-keep:]
        return forget

    def _store_due(self, trigger: str) -> bool:
        """False while the store waits out its backoff after a failure, for a timer snapshot
        (an exit or a signal is the last chance: always tried)."""
        return trigger not in _BUDGETED or time.monotonic() >= self._store_retry_at

    def _open_store(self, trigger: str) -> Any:
        if self._store is not None:
            return self._store
        if not self._store_due(trigger):
            return None
        started = time.perf_counter()
        try:
            store = _native.Store.open(self.options.store, create=True)
            store.put_run(self.run.id, self.run.to_json())
        except Exception as exc:
            self._failed(exc if isinstance(exc, (StoreError, OSError)) else StoreError(str(exc)),
                         time.perf_counter() - started)
            return None
        self._store = store
        self._store_backoff_s = _STORE_BACKOFF_S[0]
        return store


def waits_for_exit(asked: bool | None) -> bool:
    """Whether the program waits for its exit snapshot: --wait-exit/--no-wait-exit when
    given, else $RELIVE_WAIT_EXIT, else under Slurm, which kills a job's leftover processes
    when the job ends (a detached child would be killed before it commits)."""
    if asked is not None:
        return asked
    said = os.environ.get("RELIVE_WAIT_EXIT", "").strip().lower()
    if said:
        return said not in ("0", "no", "false")
    return "SLURM_JOB_ID" in os.environ


def _forget(store: Any, ids: list[str]) -> None:
    """--keep-last, in a forked snapshot's child after its commit: a prune of ``ids``. A
    failure costs only space (they are forgotten by a later one), never the snapshot."""
    from relive.prune import DEFAULT_GRACE_S

    try:
        store.prune(ids, DEFAULT_GRACE_S)
    except Exception:
        pass
