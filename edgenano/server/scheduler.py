"""Continuous batching: one thread owns the model and runs every evaluation the server's requests
ask for. Each step takes the decode tokens that are waiting (one per sequence) into one batched
forward (`Model.eval_batch`: the weights stream once for all of them) and one chunk of a waiting
prefill, so a long prompt delays the others by a chunk at a time, never by its whole length.

Requests run as ordinary threads over the synchronous generation code (sessions, completions);
their `eval` calls land here and wait for the step that serves them. A request joins or leaves
between steps; one whose client went away is dropped at its next evaluation."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


class Cancelled(Exception):
    """The request was cancelled (its client disconnected, or the server is shutting down)."""


class Handle:
    """One request's cancellation flag."""

    def __init__(self, rid: str):
        self.rid = rid
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


@dataclass
class _Job:
    handle: Handle
    state: object
    ids: list[int]
    pos: int = 0  # tokens of ids already fed (prefill runs in chunks)
    done: threading.Event = field(default_factory=threading.Event)
    logits: np.ndarray | None = None
    error: BaseException | None = None

    def finish(self, logits=None, error=None) -> None:
        self.logits, self.error = logits, error
        self.done.set()


@dataclass
class SchedulerStats:
    steps: int = 0               # decode steps run (each one forward over its batch)
    decode_tokens: int = 0       # tokens decoded in them (sum of batch sizes)
    max_batch_seen: int = 0
    prefill_chunks: int = 0
    prefill_tokens: int = 0
    busy_s: float = 0.0          # time spent in forwards


class Scheduler:
    """`eval(handle, state, ids)` from any thread: the logits after ids, computed on this
    scheduler's thread, batched with the other requests' decode steps. `prefill_chunk` bounds how
    many prompt tokens one step feeds; `max_batch` how many sequences one decode step takes."""

    def __init__(self, model, *, prefill_chunk: int = 256, max_batch: int = 64):
        if prefill_chunk < 1 or max_batch < 1:
            raise ValueError("prefill_chunk and max_batch must be >= 1")
        self.model = model
        self.prefill_chunk, self.max_batch = prefill_chunk, max_batch
        self.stats = SchedulerStats()
        self._cv = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._active = 0  # requests holding a slot (each has at most one job waiting)
        self._stop = False
        self._last_step_s = 0.0
        self._thread = threading.Thread(target=self._run, name="edgenano-scheduler", daemon=True)
        self._thread.start()

    # -- the request side ----------------------------------------------------------------------
    def enter(self) -> None:
        with self._cv:
            self._active += 1

    def leave(self) -> None:
        with self._cv:
            self._active -= 1
            self._cv.notify_all()

    @property
    def active(self) -> int:
        return self._active

    def eval(self, handle: Handle, state, ids: list[int]) -> np.ndarray:
        if handle.cancelled:
            raise Cancelled(handle.rid)
        job = _Job(handle, state, list(ids))
        with self._cv:
            if self._stop:
                raise Cancelled("the server is shutting down")
            self._queue.append(job)
            self._cv.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.logits

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=10)

    # -- the model side ------------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if self._stop:
                for j in self._queue:
                    j.finish(error=Cancelled("the server is shutting down"))
                self._queue.clear()
                return None
            # Every active request hands in its next evaluation soon (it is sampling its last
            # token) or leaves: wait for them so they share this step, up to as long as the last
            # step took (a step shared by B sequences costs about one of them), at most 0.25 s.
            deadline = time.monotonic() + min(0.25, max(0.001, self._last_step_s))
            while len(self._queue) < self._active and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            jobs = list(self._queue)
            self._queue.clear()
            return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            live = []
            for j in jobs:
                if j.handle.cancelled:
                    j.finish(error=Cancelled(j.handle.rid))
                else:
                    live.append(j)
            decodes = [j for j in live if j.pos == 0 and len(j.ids) == 1][: self.max_batch]
            picked = {id(j) for j in decodes}
            rest = [j for j in live if id(j) not in picked]
            t0 = time.perf_counter()
            if decodes:
                self._decode(decodes)
                self._last_step_s = time.perf_counter() - t0
            # prompts, oldest first, up to prefill_chunk tokens in all this step (several short
            # ones at once; a long one a chunk at a time); decodes past max_batch go first next
            # step (they are put back at the front of the queue)
            budget = self.prefill_chunk
            for j in rest:
                if budget <= 0:
                    break
                if len(j.ids) > 1 or j.pos > 0:
                    budget -= self._prefill_chunk(j, budget)
            self.stats.busy_s += time.perf_counter() - t0
            back = [j for j in rest if not j.done.is_set()]
            if back:
                with self._cv:
                    self._queue.extendleft(reversed(back))  # ahead of newer jobs, in order

    def _decode(self, jobs: list[_Job]) -> None:
        try:
            if len(jobs) == 1:
                logits = self.model.eval(jobs[0].state, jobs[0].ids)[None]
            else:
                logits = self.model.eval_batch([j.state for j in jobs], [j.ids[0] for j in jobs])
        except Exception:  # noqa: BLE001 - find whose it is: each alone
            for j in jobs:
                try:
                    j.finish(self.model.eval(j.state, j.ids))
                except Exception as e:  # noqa: BLE001 - handed to the request's thread
                    j.finish(error=e)
            return
        s = self.stats
        s.steps += 1
        s.decode_tokens += len(jobs)
        s.max_batch_seen = max(s.max_batch_seen, len(jobs))
        for b, j in enumerate(jobs):
            j.finish(logits[b])

    def _prefill_chunk(self, job: _Job, most: int) -> int:
        """Feed up to `most` more of the job's tokens; how many were fed."""
        start = job.pos
        end = min(len(job.ids), start + most)
        try:
            logits = self.model.eval(job.state, job.ids[start:end])
        except Exception as e:  # noqa: BLE001 - handed to the request's thread
            job.finish(error=e)
            return end - start
        self.stats.prefill_chunks += 1
        self.stats.prefill_tokens += end - start
        job.pos = end
        if end == len(job.ids):
            job.finish(logits)
        return end - start

    def snapshot(self) -> dict:
        s = self.stats
        return {"active": self._active, "waiting_evals": len(self._queue),
                "decode_steps": s.steps, "decode_tokens": s.decode_tokens,
                "mean_batch": s.decode_tokens / s.steps if s.steps else 0.0,
                "max_batch": s.max_batch_seen, "prefill_chunks": s.prefill_chunks,
                "prefill_tokens": s.prefill_tokens, "busy_seconds": round(s.busy_s, 3)}
