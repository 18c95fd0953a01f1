"""The threads of the frame pipeline: stages joined by bounded queues, in order, with back-pressure.

    source thread ──q──▶ stage ──q──▶ stage ──q──▶ … ──▶ the last queue (read by the caller)

Every queue is bounded (queue.Queue(maxsize=...), or Lanes of them): a stage that is ahead
blocks on put() until the next one takes an item, so memory stays flat and the slowest stage
sets the pace. Each stage is one thread reading one FIFO queue, so items leave in the order they
came; a stage run by several threads at once reads and writes Lanes, which deal the items to the
threads in turn and collect them in the same turn, so the order holds there too.

Stopping: `Pipeline.stop()` (Ctrl-C, a consumer that stops reading, a fault) makes the source
stop reading and the stages marked `drop_on_stop` (the model's) skip what is still queued; the
others finish what they hold, so the frames already explained are still overlaid and encoded.
A stage that fails keeps draining its inbox (no producer blocks), stops the pipeline (the
stages drop what they hold) and keeps its error for the caller (Pipeline.raise_error); a source
that fails ends its stream there, and the stages finish the items read before the fault.
Each stage times its own work and its waits (`times`), for `seg-xai video --profile`.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from typing import Callable, Iterable, Iterator, Optional

END = object()  # the end of a queue's stream
SKIPPED = object()  # in place of an item a stage skipped (stopping, or after a failure): keeps Lanes in step
_POLL = 0.1  # s: how often a blocked put looks at the stop flag


def _main_thread_takes_ctrl_c() -> None:
    """Block SIGINT in the calling stage thread: the kernel then hands a Ctrl-C to the main thread,
    whose wait it interrupts at once (the stage threads cannot handle it: Python runs signal
    handlers in the main thread only, and a signal caught by another thread waits until the main
    thread next runs)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class StageTimes:
    """What one stage thread spent: seconds working (wall), its own CPU seconds while working,
    and seconds waiting for input and for room downstream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy = self.cpu = self.waiting_in = self.waiting_out = 0.0

    def row(self, frames: int, seconds: float) -> str:
        """One line of profile_table: per output frame and as shares of the run's `seconds`."""
        per, share = 1e3 / max(frames, 1), 100 / max(seconds, 1e-9)
        return (f"{self.name:<10s} {self.busy * per:8.2f} {self.cpu * per:8.2f} {self.busy * share:6.0f}% "
                f"{self.waiting_in * share:6.0f}% {self.waiting_out * share:6.0f}%")


def profile_table(times: list, frames: int, seconds: float) -> list[str]:
    """`seg-xai video --profile`: each stage's time per output frame and its share of the run.
    The stage busy nearly 100% of the run is the one that sets the pace."""
    head = (f"{'stage':<10s} {'busy ms':>8s} {'cpu ms':>8s} {'busy':>7s} {'idle in':>7s} {'blocked':>7s}"
            f"   (per output frame; shares of {seconds:.2f} s, {frames} frames)")
    return [head] + [t.row(frames, seconds) for t in times]


class Pipeline:
    """A stop flag, the stages started under it and the first error any of them met."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.interrupted = False  # a stage met KeyboardInterrupt (Ctrl-C inside its work)
        self.aborted = False  # a stage failed: the others skip their work
        self._errors: list[tuple[threading.Thread, BaseException]] = []
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stopping.set()

    def fail(self, thread: threading.Thread, err: BaseException, abort: bool = True) -> None:
        """Called by a stage thread: keep its error. `abort` (a stage failed): stop the pipeline,
        the stages drop what they hold; else (the source failed and ended its stream) the stages
        finish the items read before the fault."""
        with self._lock:
            if isinstance(err, KeyboardInterrupt):
                self.interrupted = True
            else:
                self._errors.append((thread, err))
                self.aborted = self.aborted or abort
        if abort or isinstance(err, KeyboardInterrupt):
            self.stop()

    @property
    def error(self) -> Optional[tuple[threading.Thread, BaseException]]:
        """(stage, error) of the first stage that failed, or None."""
        return self._errors[0] if self._errors else None

    def raise_error(self) -> None:
        """Raise the first stage's error, if one failed."""
        if self._errors:
            raise self._errors[0][1]

    def put(self, q: queue.Queue, item) -> bool:
        """Put `item` unless the pipeline stops first (then False): a source never blocks forever."""
        while not self.stopping.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def join(self, timeout: Optional[float] = None) -> None:
        for thread in self.threads:
            thread.join(timeout)

    @property
    def times(self) -> list[StageTimes]:
        return [t.times for t in self.threads if isinstance(getattr(t, "times", None), StageTimes)]


class Source(threading.Thread):
    """Puts the items of `items()` (an iterator made in this thread) on `outbox`, then END.

    Stops reading when the pipeline stops. An error from the iterator goes to the pipeline, after
    the items before it (the stages finish those).
    """

    def __init__(self, pipeline: Pipeline, name: str, items: Callable[[], Iterable], outbox: queue.Queue) -> None:
        super().__init__(name=f"seg-xai-{name}", daemon=True)
        self.pipeline, self.items, self.outbox = pipeline, items, outbox
        self.times = StageTimes(name)
        pipeline.threads.append(self)

    def run(self) -> None:
        _main_thread_takes_ctrl_c()
        times = self.times
        try:
            iterator = iter(self.items())
            while not self.pipeline.stopping.is_set():
                start, cpu = time.perf_counter(), time.thread_time()
                item = next(iterator, END)
                got = time.perf_counter()
                times.busy += got - start
                times.cpu += time.thread_time() - cpu
                if item is END:
                    break
                ok = self.pipeline.put(self.outbox, item)
                times.waiting_out += time.perf_counter() - got
                if not ok:
                    break
        except BaseException as err:  # noqa: BLE001 - handed to the pipeline's owner
            self.pipeline.fail(self, err, abort=False)
        finally:
            # Always room for END: the next stage keeps reading until it sees END.
            self.outbox.put(END)


class Stage(threading.Thread):
    """Takes items from `inbox` until END, puts step(item) on `outbox` (when there is one), runs
    close() and passes END on. After a failure (its own or another stage's) it skips its work
    but keeps reading, so no producer blocks; with `drop_on_stop` it also skips work once the
    pipeline is stopping (the model's stage: Ctrl-C should not wait for the queued batches).
    A skipped item goes on as SKIPPED. inbox and outbox: a queue.Queue or Lanes.
    """

    def __init__(self, pipeline: Pipeline, name: str, step: Callable, inbox: queue.Queue,
                 outbox: Optional[queue.Queue] = None, close: Optional[Callable[[], None]] = None,
                 drop_on_stop: bool = False) -> None:
        super().__init__(name=f"seg-xai-{name}", daemon=True)
        self.pipeline, self.step, self.inbox, self.outbox = pipeline, step, inbox, outbox
        self.close, self.drop_on_stop = close, drop_on_stop
        self.times = StageTimes(name)
        pipeline.threads.append(self)

    def _skipping(self) -> bool:
        p = self.pipeline
        return p.aborted or (self.drop_on_stop and p.stopping.is_set())

    def run(self) -> None:
        _main_thread_takes_ctrl_c()
        times = self.times
        while True:
            start = time.perf_counter()
            item = self.inbox.get()
            got = time.perf_counter()
            times.waiting_in += got - start
            if item is END:
                break
            result, cpu = SKIPPED, time.thread_time()
            if item is not SKIPPED and not self._skipping():
                try:
                    result = self.step(item)
                except BaseException as err:  # noqa: BLE001 - handed to the pipeline's owner
                    self.pipeline.fail(self, err)
            done = time.perf_counter()
            times.busy += done - got
            times.cpu += time.thread_time() - cpu
            if self.outbox is not None:
                self.outbox.put(result)  # the next stage always reads on, so this returns
                times.waiting_out += time.perf_counter() - done
        try:
            if self.close is not None:
                self.close()
        except BaseException as err:  # noqa: BLE001
            self.pipeline.fail(self, err)
        finally:
            if self.outbox is not None:
                self.outbox.put(END)


class Lanes:
    """`n` bounded queues that parallel workers (one per lane) use as one FIFO queue: put() deals
    the items round-robin, get() reads them back in the same round, so the items keep their order
    while `n` workers process them at once. A worker passes on one item (or SKIPPED) for each it
    takes, so the lanes stay in step. END goes into every lane; get() returns it once every lane
    has delivered it."""

    def __init__(self, n: int, maxsize: int) -> None:
        self.lanes = [queue.Queue(maxsize=maxsize) for _ in range(n)]
        self._put = self._get = 0

    def put(self, item, timeout: Optional[float] = None) -> None:
        if item is END:
            for lane in self.lanes:
                lane.put(END)
            return
        self.lanes[self._put].put(item, timeout=timeout)  # queue.Full: the same lane next time
        self._put = (self._put + 1) % len(self.lanes)

    def get(self, timeout: Optional[float] = None):
        i = self._get
        item = self.lanes[i].get(timeout=timeout)
        self._get = (i + 1) % len(self.lanes)
        if item is END:  # every item came before it in the round: the other lanes hold END only
            for lane in self.lanes[:i] + self.lanes[i + 1:]:
                while lane.get() is not END:
                    pass
        return item


class Outlet:
    """The reading end of a pipeline's last queue: its items in order, up to END; close() stops
    the pipeline, reads on to END (the stages finish what they hold) and waits for the threads."""

    def __init__(self, pipeline: Pipeline, q) -> None:
        self.pipeline, self.queue = pipeline, q
        self.ended = False

    def __iter__(self) -> Iterator:
        while not self.ended:
            try:
                # A timeout, so that a Ctrl-C the kernel handed to another thread (ONNX Runtime's,
                # FFmpeg's) is seen here within _POLL seconds.
                item = self.queue.get(timeout=_POLL)
            except queue.Empty:
                if not self.pipeline.alive():  # END was taken by an interrupted read: nothing more comes
                    self.ended = True
                continue
            if item is END:
                self.ended = True
                return
            if item is not SKIPPED:
                yield item

    def close(self) -> None:
        self.pipeline.stop()
        for _ in self:
            pass
        self.pipeline.join()
