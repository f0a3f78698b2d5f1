"""A training run profiles a few of its own optimizer steps (``bqnet-train --profile-steps N``).

Why: the GPU training step is bound by the host (Python, kernel launches) more than by its kernels,
and device time is scarce, so the training call itself says where a step's time goes instead of a
separate benchmark call. Once the run is warm, ``StepProfiler`` runs ``torch.profiler`` over the next
N steps as the run makes them (the data loading of those steps, the scheduler and the log included),
then the run goes on unprofiled. It writes ``<train.work_dir>/profile.txt`` (the per-step figures,
one line per region of ``train_step``, the top ops by self device time and by self CPU time) and an
``event: "profile"`` line into ``metrics.jsonl``.

The warm-up rule (``warmup_steps``): 10 steps, or fewer when the run has fewer than ``10 + N`` steps
left, so that the window of N steps still fits; a run of N steps or fewer is profiled whole. A run
stopped inside the window (its time budget) writes the steps profiled so far. Only rank 0 profiles
under DDP (the loop gives the others ``n_steps=0``).
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from .state import JsonLog

__all__ = ["REGIONS", "REGION_PREFIX", "StepProfiler", "region", "warmup_steps"]

WARMUP_STEPS = 10
TABLE_ROWS = 25
REGION_PREFIX = "train_step."
# The ranges ``train_step`` opens while profiled, in the order it runs them; what a step spends
# outside them (data loading, the scheduler, the log) is the profile's "outside train_step" line.
REGIONS = ("forward", "loss", "backward", "optimizer", "readback")


def region(name: str, on: bool) -> AbstractContextManager[Any]:
    """A ``record_function`` range named ``train_step.<name>`` when ``on`` (a profiled step), else a
    no-op context: unprofiled steps do not pay for the profiler's range calls."""
    return record_function(REGION_PREFIX + name) if on else nullcontext()


def warmup_steps(steps_left: int, n_steps: int, most: int = WARMUP_STEPS) -> int:
    """Steps run before the profiled window: ``most``, or fewer so that ``n_steps`` still fit in
    the ``steps_left`` of the run (0: the window starts at once and takes what there is)."""
    return max(0, min(most, steps_left - n_steps))


class StepProfiler:
    """The profiled window of a training run; the loop calls ``before_fetch`` where it is about to
    fetch a step's batch, ``after_step`` when the step is done, and ``finish`` when training ends.

    ``first_step``: the step the run starts at (a resumed run counts its warm-up from there);
    ``steps_per_epoch``: to tell how many epoch ends (a checkpoint save, maybe an evaluation) fell
    inside the window, since those are then part of its wall time."""

    def __init__(self, n_steps: int, first_step: int, total_steps: int, steps_per_epoch: int,
                 device: torch.device, work_dir: Path, jlog: JsonLog) -> None:
        if n_steps < 0:
            raise ValueError(f"--profile-steps must be >= 0, got {n_steps}")
        self.n_steps = n_steps
        self.warmup = warmup_steps(total_steps - first_step, n_steps)
        self.start_after = first_step + self.warmup  # the window opens once the run is at this step
        self.end_at = min(self.start_after + n_steps, total_steps)
        self.steps_per_epoch = steps_per_epoch
        self.device = device
        self.path = Path(work_dir) / "profile.txt"
        self.jlog = jlog
        self._prof: profile | None = None
        self._done = n_steps == 0 or self.end_at <= self.start_after
        self._data_s: list[float] = []
        self._t0 = 0.0

    @property
    def active(self) -> bool:
        """True inside the window: ``train_step`` then opens its region ranges."""
        return self._prof is not None

    def __enter__(self) -> StepProfiler:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:  # a failed run: leave no profiler running in the process, write nothing
            self._stop()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _stop(self) -> profile | None:
        prof, self._prof = self._prof, None
        if prof is not None:
            prof.stop()
            self._done = True
        return prof

    def before_fetch(self, step: int) -> None:
        """The loop, ``step`` steps done, is about to fetch the next batch: open the window if the
        warm-up is over (the fetch is then profiled as part of the first step)."""
        if self._done or self._prof is not None or step != self.start_after:
            return
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._sync()  # no earlier kernel runs into the window
        self._prof = profile(activities=acts, record_shapes=False)
        self._prof.start()
        self._t0 = time.perf_counter()  # the profiler's own start-up left out of the wall

    def after_step(self, step: int, data_s: float) -> None:
        """Step ``step`` is done (``data_s``: the loop's wait for its batch); closes the window after
        its last step."""
        if self._prof is None:
            return
        self._data_s.append(data_s)
        if step >= self.end_at:
            self.finish(step)

    def finish(self, step: int) -> dict[str, Any] | None:
        """Close the window (when open) and write the profile; returns the per-step figures."""
        if self._prof is None:
            return None
        self._sync()
        wall = time.perf_counter() - self._t0
        prof = self._stop()
        n = len(self._data_s)
        if prof is None or n == 0:
            return None
        try:
            figures = self._figures(prof, n, wall, step)
            report = self._report(prof, figures)
        except Exception as exc:  # noqa: BLE001 -- a diagnostic must not end a run of scarce device time
            note = f"profile of {n} steps to step {step} failed: {exc!r}; training goes on"
            print(f"warning: {note}", file=sys.stderr, flush=True)
            self.path.write_text(note + "\n")
            self.jlog.write(event="profile", step=step, steps=n, error=repr(exc))
            return None
        self.path.write_text(report)
        self.jlog.write(event="profile", step=step, **figures)
        print(f"profile of steps {figures['first_step']}-{figures['last_step']}: "
              f"{figures['wall_ms_per_step']:.1f} ms/step, {figures['op_calls_per_step']:.0f} op calls/step, "
              f"GPU kernels {figures['gpu_kernel_ms_per_step']:.1f} ms/step; {self.path}", flush=True)
        return figures

    def _figures(self, prof: profile, n: int, wall: float, step: int) -> dict[str, Any]:
        ka = prof.key_averages()
        host = [e for e in ka if e.device_type == DeviceType.CPU and not e.key.startswith(REGION_PREFIX)]
        device = device_events(ka)
        first = step - n + 1
        regions: dict[str, dict[str, float]] = {}
        ops_below = _ops_below_regions(prof)
        ranges = {e.key: e for e in ka if e.device_type == DeviceType.CPU and e.key.startswith(REGION_PREFIX)}
        for name in REGIONS:
            ev = ranges.get(REGION_PREFIX + name)
            if ev is None:
                continue
            regions[name] = {"host_ms": round(ev.cpu_time_total / n / 1e3, 3),
                             "device_ms": round(ev.device_time_total / n / 1e3, 3),
                             "op_calls": round(ops_below.get(name, 0) / n, 1)}
        wall_ms = wall / n * 1e3
        return {
            "first_step": first, "last_step": step, "steps": n, "warmup": self.warmup,
            "device": str(self.device),
            "wall_ms_per_step": round(wall_ms, 3),
            "data_wait_ms_per_step": round(sum(self._data_s) / n * 1e3, 3),
            "op_calls_per_step": round(sum(e.count for e in host) / n, 1),
            "aten_calls_per_step": round(sum(e.count for e in host if e.key.startswith("aten::")) / n, 1),
            "device_events_per_step": round(sum(e.count for e in device) / n, 1),
            "gpu_kernel_ms_per_step": round(sum(e.self_device_time_total for e in device) / n / 1e3, 3),
            "outside_train_step_ms": round(wall_ms - sum(r["host_ms"] for r in regions.values()), 3),
            "epoch_ends_in_window": sum(1 for k in range(first, step) if k % self.steps_per_epoch == 0),
            "regions": regions,
        }

    def _report(self, prof: profile, f: dict[str, Any]) -> str:
        ka = prof.key_averages()
        lines = [
            f"# bqnet-train profile ({f['device']}): torch.profiler over optimizer steps of the run, "
            "data loading included",
            f"steps profiled: {f['first_step']}-{f['last_step']} ({f['steps']} steps)",
            f"warm-up steps: {f['warmup']}",
            f"wall per step: {f['wall_ms_per_step']:.1f} ms (synchronized at the window's start and end)",
            f"data wait per step: {f['data_wait_ms_per_step']:.1f} ms (the loop's wait for its batch)",
            f"op calls per step: {f['op_calls_per_step']:.0f} (host events: ops and runtime calls; "
            f"aten:: {f['aten_calls_per_step']:.0f})",
            f"device events per step: {f['device_events_per_step']:.0f} (kernels, copies, ...)",
            f"GPU kernel time per step: {f['gpu_kernel_ms_per_step']:.1f} ms (self device time total / steps)",
            f"epoch ends in the window: {f['epoch_ends_in_window']} (their checkpoint save counts in the wall)",
            "",
            "regions of train_step, per step (host: the range's duration on the calling thread; device: the",
            "kernels its ops launched, on CUDA without backward's, which autograd's device thread launches;",
            "ops: host events below it):",
        ]
        for name, r in f["regions"].items():
            lines.append(f"  {name:<18} host {r['host_ms']:9.1f} ms  device {r['device_ms']:9.1f} ms  "
                         f"ops {r['op_calls']:8.0f}")
        lines.append(f"  {'outside train_step':<18} host {f['outside_train_step_ms']:9.1f} ms  (data, scheduler, log)")
        lines += ["", f"top {TABLE_ROWS} by self device time:"]
        if self.device.type == "cuda":
            lines.append(ka.table(sort_by="self_device_time_total", row_limit=TABLE_ROWS))
        else:
            lines.append("  none: a CPU run records no device time")
        lines += ["", f"top {TABLE_ROWS} by self CPU time:", ka.table(sort_by="self_cpu_time_total", row_limit=TABLE_ROWS)]
        return "\n".join(lines) + "\n"


def device_events(ka: Any) -> list[Any]:
    """The device's own events of ``prof.key_averages()`` (kernels, copies, memsets): their self
    device times add up to the table's "Self CUDA time total". Host ops also carry the device time
    of what they launched, so a sum over every event counts each kernel twice; a range's projection
    onto the GPU timeline (a user annotation) is no kernel either."""
    return [e for e in ka if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)]


def _ops_below_regions(prof: profile) -> dict[str, int]:
    """Host events nested below each region range (any depth), per region name, over the window."""
    counts: dict[str, int] = {}
    for ev in prof.events():
        if ev.device_type != DeviceType.CPU or not ev.name.startswith(REGION_PREFIX):
            continue
        name = ev.name[len(REGION_PREFIX):]
        stack, n = list(ev.cpu_children), 0
        while stack:
            child = stack.pop()
            n += 1
            stack.extend(child.cpu_children)
        counts[name] = counts.get(name, 0) + n
    return counts
