"""The thread that owns the model: prepares maps, answers sentences, never leaves one unanswered.

ROS-free on purpose (numpy in, ``Answer`` out, a ``deliver`` callback): the node converts
messages and publishes, this module decides what happens when. Callers only enqueue:

* maps: latest wins (a newer map replaces one not yet taken); each is prepared once with
  ``Segmenter.prepare`` and becomes map version v+1 only when it succeeded, so versions have
  no gaps. A map that cannot be converted or prepared is dropped with one ERROR line saying
  which map stays in use.
* sentences: a bounded deque; overflow drops the oldest (answered ``dropped: text queue full``).
  They are answered in batches of one task against the newest prepared map. While no usable
  map exists (none yet, only dropped ones) a sentence waits at most ``map_wait_timeout`` and is
  then answered ``no usable map: ...``; a map being prepared is waited for.

Every request gets exactly one ``Answer`` through ``deliver``: from the model, or found=false
with a reason. ``stop`` answers everything still queued or in flight (``node shutting down``)
at once and does not wait for a running prepare: the thread is a daemon and what it computes
after ``stop`` is dropped without a word.

``pause(reason)`` (lifecycle node inactive) refuses queued and later sentences with that reason until
``resume`` and forgets the prepared map, so its memory can be freed; a map prepared meanwhile is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["Request", "MapInput", "PreparedMap", "Answer", "WorkerStats", "SegmenterLike", "Worker",
           "MAX_MODEL_TEXT_CHARS", "SHUTDOWN_REASON"]

# Characters of a sentence handed to the model; the tokenizer keeps far fewer tokens anyway, this
# only bounds the tokenizer's work on absurd inputs.
MAX_MODEL_TEXT_CHARS = 2000
SHUTDOWN_REASON = "node shutting down"
LATENCY_KEYS = ("prepare_ms", "queue_ms", "text_ms", "decoder_ms", "post_ms")
_WORKERS: weakref.WeakSet[Worker] = weakref.WeakSet()  # a running thread keeps its worker in here


class SegmenterLike(Protocol):
    """The part of ``bqnet_model.pipeline.Segmenter`` the worker uses."""

    def prepare(self, xyz: np.ndarray, rgb: np.ndarray | None = None, **kwargs: Any) -> Any: ...

    def query(self, cache: Any, texts: list[str], task: str | None = None) -> list[Any]: ...


@dataclass(eq=False)
class Request:
    """One sentence to answer. ``task`` None: the node's task parameter at answer time."""

    text: str
    request_id: str
    stamp: Any  # builtin_interfaces/Time of receipt (node clock), echoed in the answer
    t_received: float = field(default_factory=time.monotonic)
    task: str | None = None
    warnings: list[str] = field(default_factory=list)
    reply: Callable[[Any], None] | None = None  # the caller's hook (a waiting service call), called by the node
    answered: bool = False  # set once, under the worker's lock


@dataclass
class MapInput:
    """A received map as arrays; rows are the message's points, row-major."""

    header: Any  # std_msgs/Header, echoed in every answer against this map
    xyz: np.ndarray  # float32 (N, 3), NaN rows kept (the library drops them)
    rgb: np.ndarray | None  # uint8 (N, 3)
    image_features: np.ndarray | None = None  # float32 (N, C)
    t_received: float = field(default_factory=time.monotonic)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


@dataclass
class PreparedMap:
    """A map version the worker prepared."""

    version: int
    header: Any
    num_points: int
    xyz: np.ndarray  # the message's points, for the target cloud
    rgb: np.ndarray | None
    cache: Any = None  # None: nothing to segment (empty_reason says why)
    empty_reason: str = ""
    prepare_ms: float = 0.0
    warnings: tuple[str, ...] = ()  # attached to every answer against this map
    t_ready: float = field(default_factory=time.monotonic)


@dataclass
class Answer:
    """What the node publishes for one request."""

    request: Request
    task: str
    found: bool
    reason: str
    map: PreparedMap | None = None
    objects: list[Any] = field(default_factory=list)  # the library's TargetObjects kept, best first
    point_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows of the message
    score: float = 0.0  # best score the model gave, also below the threshold
    warnings: list[str] = field(default_factory=list)
    latencies_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class WorkerStats:
    """Counters for tests, logs and /diagnostics."""

    maps_received: int = 0
    maps_replaced: int = 0  # superseded by a newer map before the worker took them
    maps_rejected: int = 0  # malformed message: dropped
    maps_failed: int = 0  # prepare raised: dropped
    maps_prepared: int = 0
    maps_thinned: int = 0
    sentences_received: int = 0
    sentences_dropped: int = 0
    sentences_empty: int = 0
    sentences_timed_out: int = 0  # no usable map within map_wait_timeout
    sentences_refused: int = 0  # answered found=false while paused (lifecycle node inactive)
    sentences_answered: int = 0  # by the model
    answers_delivered: int = 0
    last_prepare_ms: float = 0.0
    last_query_ms: float = 0.0
    last_total_ms: float = 0.0


@dataclass(frozen=True)
class Settings:
    """What the worker reads of the node's parameters (a fresh copy per step)."""

    task: str
    score_threshold: float
    max_batch: int
    text_queue_size: int
    map_wait_timeout: float
    max_points: int


class Worker:
    """See the module docstring. ``settings()`` is called for every step (dynamic parameters),
    ``deliver(answer)`` for every answer, ``log`` gets (level, text) pairs, ``prepare_map(map)``
    turns a MapInput into (cache, warnings) or raises."""

    def __init__(
        self,
        *,
        segmenter: SegmenterLike,
        settings: Callable[[], Settings],
        deliver: Callable[[Answer], None],
        log: Callable[[int, str], None],
        prepare_map: Callable[[MapInput], tuple[Any, list[str]]],
    ) -> None:
        self._seg = segmenter
        self._settings = settings
        self._deliver_cb = deliver
        self._log = log
        self._prepare_map = prepare_map
        self.stats = WorkerStats()
        self._cv = threading.Condition(threading.RLock())  # re-entrant: tests enqueue several atomically
        self._map_job: MapInput | Callable[[], MapInput] | None = None
        self._texts: deque[Request] = deque()
        self._rejected: list[tuple[Request, str]] = []
        self._in_flight: list[Request] = []
        self.prepared: PreparedMap | None = None
        self._no_map_why = "no map received yet"
        self.last_drop = ""  # why the newest map was dropped; "" once a map prepares
        self._version = 0
        self._stop = False
        self._paused = ""  # non-empty: the reason every sentence is refused with (see pause)
        self._busy = False
        self._preparing = False
        self._thread = threading.Thread(target=self._run, name="bqnet_worker", daemon=True)
        self._thread.start()
        _WORKERS.add(self)

    @staticmethod
    def threads_running() -> int:
        """Worker threads of this process still running: after ``stop``, a prepare or query that
        was not waited for (the process must then exit without finalizing the interpreter, which
        would end the thread inside the model's C++ code and abort the process)."""
        return sum(1 for w in list(_WORKERS) if w._thread.is_alive())

    # ------------------------------------------------------------------ enqueue (any thread)
    @property
    def lock(self) -> threading.Condition:
        return self._cv

    def queue_length(self) -> int:
        with self._cv:
            return len(self._texts)

    def submit_map(self, job: MapInput | Callable[[], MapInput]) -> None:
        """Queue a map (or a callable converting one in the worker, raising ValueError for a
        malformed message): latest wins."""
        with self._cv:
            self.stats.maps_received += 1
            if self._map_job is not None:
                self.stats.maps_replaced += 1
                self._log(logging.INFO, f"a newer map replaced one not yet prepared "
                                        f"({self.stats.maps_replaced} replaced so far)")
            self._map_job = job
            self._cv.notify_all()

    def submit(self, req: Request) -> None:
        """Queue a sentence; empty ones and overflow are answered found=false right away."""
        s = self._settings()
        with self._cv:
            self.stats.sentences_received += 1
            stopped = self._stop
            if stopped:
                pass
            elif self._paused:
                self.stats.sentences_refused += 1
                self._rejected.append((req, self._paused))
            elif not req.text.strip():
                self.stats.sentences_empty += 1
                self._log(logging.WARNING, f"empty sentence ({req.request_id}): answered found=false ('empty text')")
                self._rejected.append((req, "empty text"))
            elif req.task is not None and req.task not in ("res", "gres"):
                self._rejected.append((req, f"invalid task {req.task!r} (use 'res', 'gres' or '' for the node's)"))
            else:
                if len(self._texts) >= s.text_queue_size:
                    old = self._texts.popleft()
                    self.stats.sentences_dropped += 1
                    self._log(logging.WARNING, f"text queue full ({s.text_queue_size}): dropped the oldest sentence "
                                               f"{old.text[:60]!r} ({self.stats.sentences_dropped} dropped so far)")
                    self._rejected.append((old, "dropped: text queue full"))
                self._texts.append(req)
                if self.prepared is None and self._map_job is None and not self._preparing:
                    self._log(logging.INFO, f"sentence queued until a usable map arrives ({self._no_map_why}; "
                                            f"answered found=false after {s.map_wait_timeout:g} s)")
            self._cv.notify_all()
        if stopped:  # the thread is gone: answer here
            self._deliver(self._not_found(req, SHUTDOWN_REASON, self.prepared, s), at_stop=True)

    # ------------------------------------------------------------------ stop / wait
    def stop(self) -> list[Answer]:
        """Answer every queued or in-flight request with found=false 'node shutting down' (the
        answers are delivered here, in the caller's thread) and let the thread go; a running
        prepare or query finishes in the background and its result is dropped."""
        with self._cv:
            self._stop = True
            pending = [r for r, _ in self._rejected] + list(self._texts) + list(self._in_flight)
            self._rejected, self._texts = [], deque()
            self._cv.notify_all()
        answers = []
        for req in pending:
            a = self._not_found(req, SHUTDOWN_REASON, self.prepared, self._settings())
            if self._deliver(a, at_stop=True):
                answers.append(a)
        if answers:
            self._log(logging.INFO, f"answered {len(answers)} pending sentence(s) with '{SHUTDOWN_REASON}'")
        return answers

    def pause(self, reason: str) -> None:
        """See the module docstring; a batch being answered still gets the model's answer."""
        with self._cv:
            self._paused = reason
            self.stats.sentences_refused += len(self._texts)
            self._rejected, self._texts = self._rejected + [(r, reason) for r in self._texts], deque()
            self._map_job, self.prepared = None, None
            self._no_map_why, self.last_drop = "no map received since the node was activated", ""
            self._cv.notify_all()

    def resume(self) -> None:
        with self._cv:  # sentences wait for a map again, as after start-up
            self._paused = ""
            self._cv.notify_all()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued and the thread is idle (or timeout); for tests and tools."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._busy or self._has_work(time.monotonic()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    @property
    def usable_map_why(self) -> str:
        return self._no_map_why

    # ------------------------------------------------------------------ the thread
    def _expired(self, now: float, timeout: float) -> bool:
        """Whether the oldest waiting sentence has waited out map_wait_timeout with no usable map."""
        return (self.prepared is None and self._map_job is None and bool(self._texts)
                and now - self._texts[0].t_received >= timeout)

    def _has_work(self, now: float) -> bool:
        if self._rejected or self._map_job is not None:
            return True
        if not self._texts:
            return False
        return self.prepared is not None or self._expired(now, self._settings().map_wait_timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stop:
                        self._busy = False
                        self._cv.notify_all()
                        return
                    now = time.monotonic()
                    if self._has_work(now):
                        break
                    self._busy = False
                    self._cv.notify_all()
                    timeout = None
                    if self._texts and self.prepared is None and self._map_job is None:
                        wait = self._settings().map_wait_timeout
                        timeout = max(0.0, self._texts[0].t_received + wait - now) + 0.001
                    self._cv.wait(timeout)
                self._busy = True
                s = self._settings()
                rejected, self._rejected = self._rejected, []
                job, self._map_job = self._map_job, None
                batch: list[Request] = []
                expired = False
                if job is None and self._texts:
                    expired = self.prepared is None
                    batch = self._take_batch(s, expired, now)
                self._in_flight = batch
                self._preparing = job is not None
                prepared = self.prepared
            try:
                for req, reason in rejected:
                    self._deliver(self._not_found(req, reason, prepared, s))
                if job is not None:
                    self._prepare(job, s)
                elif expired:
                    with self._cv:
                        self.stats.sentences_timed_out += len(batch)
                    reason = f"no usable map after {s.map_wait_timeout:g} s: {self._no_map_why}"
                    for req in batch:
                        self._deliver(self._not_found(req, reason, None, s))
                elif batch:
                    self._answer(batch, prepared, s)
            except Exception as exc:  # the thread never dies; whatever it held gets an answer
                if not self._stop:
                    self._log(logging.ERROR, f"worker step failed: {type(exc).__name__}: {exc}")
                for req in batch:
                    self._deliver(self._not_found(req, f"error: {type(exc).__name__}: {exc}"[:200], prepared, s))
            finally:
                with self._cv:
                    self._in_flight, self._preparing = [], False

    def _take_batch(self, s: Settings, expired: bool, now: float) -> list[Request]:
        """Sentences answered together: one task, at most max_batch; with no usable map, those
        that have waited out map_wait_timeout."""
        batch: list[Request] = []
        if expired:
            while self._texts and now - self._texts[0].t_received >= s.map_wait_timeout:
                batch.append(self._texts.popleft())
            return batch
        task = self._texts[0].task or s.task
        while self._texts and len(batch) < s.max_batch and (self._texts[0].task or s.task) == task:
            batch.append(self._texts.popleft())
        return batch

    # ------------------------------------------------------------------ prepare
    def _keeps(self) -> str:
        p = self.prepared
        if p is None:
            return "no map in use yet"
        return f"map v{p.version} ({p.num_points} points, frame '{p.header.frame_id}') stays in use"

    def _drop_map(self, counter: str, why_no_map: str, reason: str) -> None:
        """A map that will not be used: count it, remember why, say which map stays in use."""
        with self._cv:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            if self.prepared is None:
                self._no_map_why = why_no_map
            self.last_drop = reason
        self._log(logging.ERROR, f"map dropped: {self.last_drop}; {self._keeps()}")

    @staticmethod
    def _thinned(cache: Any, finite: int, s: Settings) -> str:
        """The warning for a map the library thinned to max_points, or "". What the library did
        (its cache's ``n_downsampled`` and ``n_points``) decides; a segmenter that does not say
        is taken to thin every map above max_points."""
        removed = getattr(cache, "n_downsampled", None)
        if removed is None:
            removed = finite - s.max_points if s.max_points and finite > s.max_points else 0
        if not removed:
            return ""
        kept = int(getattr(cache, "n_points", finite - removed))
        return (f"map of {finite} finite points thinned to {kept} by the library's voxel grid "
                f"(max_points {s.max_points})")

    def _prepare(self, job: MapInput | Callable[[], MapInput], s: Settings) -> None:
        t0 = time.monotonic()
        try:
            m = job() if callable(job) else job
        except (ValueError, TypeError) as exc:
            self._drop_map("maps_rejected", f"the last map was rejected ({exc})", f"malformed PointCloud2 ({exc})")
            return
        n = m.num_points
        finite = int(np.isfinite(m.xyz).all(axis=1).sum()) if n else 0
        cache, warnings, empty = None, [], ""
        if finite == 0:
            empty = "empty map"
            self._log(logging.WARNING, f"map has no finite point ({n} points): sentences are answered found=false "
                                       "('empty map')")
        else:
            try:
                cache, warnings = self._prepare_map(m)
            except Exception as exc:
                if self._stop:
                    return
                what = f"{type(exc).__name__}: {exc}"
                self._drop_map("maps_failed", f"the last map failed to prepare ({what})", f"prepare failed ({what})")
                return
            thinned = self._thinned(cache, finite, s)
            if thinned:
                with self._cv:
                    self.stats.maps_thinned += 1
                warnings = [*warnings, thinned]
                self._log(logging.WARNING, thinned)
        if self._stop:
            return
        ms = (time.monotonic() - t0) * 1e3
        with self._cv:
            if self._paused:  # paused while preparing (or a map callback raced with pause): not wanted now
                return
            self._version += 1
            self.prepared = PreparedMap(version=self._version, header=m.header, num_points=n, xyz=m.xyz, rgb=m.rgb,
                                        cache=cache, empty_reason=empty, prepare_ms=ms, warnings=tuple(warnings))
            self.stats.maps_prepared += 1
            self.stats.last_prepare_ms = ms
            self.last_drop = ""
            self._cv.notify_all()
        self._log(logging.INFO, f"map v{self._version} ready: {n} points, frame '{m.header.frame_id}', "
                                f"prepared in {ms:.0f} ms")

    # ------------------------------------------------------------------ answers
    def _answer(self, batch: list[Request], prepared: PreparedMap | None, s: Settings) -> None:
        assert prepared is not None
        task = batch[0].task or s.task
        if prepared.cache is None:
            for req in batch:
                self._deliver(self._not_found(req, prepared.empty_reason or "empty map", prepared, s, task))
            return
        texts = [r.text[:MAX_MODEL_TEXT_CHARS] for r in batch]
        for r in batch:
            if len(r.text) > MAX_MODEL_TEXT_CHARS:
                r.warnings.append(f"sentence of {len(r.text)} characters cut to {MAX_MODEL_TEXT_CHARS} for the model")
        t_start = time.monotonic()
        try:
            results = self._seg.query(prepared.cache, texts, task=task)
            if len(results) != len(batch):
                raise RuntimeError(f"model returned {len(results)} results for {len(batch)} sentences")
        except Exception as exc:
            if self._stop:
                return
            self._log(logging.ERROR, f"query failed for {len(batch)} sentence(s): {type(exc).__name__}: {exc}")
            for req in batch:
                self._deliver(self._not_found(req, f"error: {type(exc).__name__}: {exc}"[:200], prepared, s, task))
            return
        query_ms = (time.monotonic() - t_start) * 1e3
        with self._cv:
            self.stats.sentences_answered += len(batch)
            self.stats.last_query_ms = query_ms
        for req, r in zip(batch, results):
            self._deliver(self._from_result(req, r, prepared, s, task, t_start))

    def _from_result(self, req: Request, r: Any, prepared: PreparedMap, s: Settings, task: str,
                     t_start: float) -> Answer:
        """The library's Result -> Answer: objects at or above score_threshold (best first); their
        point indices already index the message's rows."""
        objects = sorted(r.objects, key=lambda o: -float(o.score))
        # A refused answer (the library's absent-object checks) has no objects but keeps its best score
        best = float(objects[0].score) if objects else float(getattr(r, "score", 0.0))
        kept = [o for o in objects if float(o.score) >= s.score_threshold and len(o.point_indices)]
        if kept:
            reason = ""
            union = np.unique(np.concatenate([np.asarray(o.point_indices, np.int64) for o in kept]))
        else:
            reason = (getattr(r, "reason", "") or
                      (f"no object above score_threshold {s.score_threshold:g}" if objects else "no target"))
            union = np.zeros(0, np.int64)
        t = dict(getattr(r, "timings_ms", {}) or {})
        lat = dict(prepare_ms=prepared.prepare_ms, queue_ms=(t_start - req.t_received) * 1e3,
                   text_ms=float(t.get("text", 0.0)), decoder_ms=float(t.get("decoder", 0.0)),
                   post_ms=float(t.get("post", 0.0)))
        return Answer(request=req, task=task, found=bool(kept), reason=reason, map=prepared, objects=kept,
                      point_indices=union, score=best,
                      warnings=[*req.warnings, *prepared.warnings, *getattr(r, "warnings", ())], latencies_ms=lat)

    def _not_found(self, req: Request, reason: str, prepared: PreparedMap | None, s: Settings,
                   task: str | None = None) -> Answer:
        lat = {k: 0.0 for k in LATENCY_KEYS}
        if prepared is not None:
            lat["prepare_ms"] = prepared.prepare_ms
        task = task or (req.task if req.task in ("res", "gres") else s.task)
        warnings = [*req.warnings, *(prepared.warnings if prepared is not None else ())]
        return Answer(request=req, task=task, found=False, reason=reason, map=prepared, warnings=warnings,
                      latencies_ms=lat)

    def _deliver(self, answer: Answer, at_stop: bool = False) -> bool:
        """Hand one answer on, at most once per request; after stop only stop's own answers."""
        with self._cv:
            req = answer.request
            if req.answered or (self._stop and not at_stop):
                return False
            req.answered = True
            self.stats.answers_delivered += 1
            self.stats.last_total_ms = (time.monotonic() - req.t_received) * 1e3
        self._deliver_cb(answer)
        return True
