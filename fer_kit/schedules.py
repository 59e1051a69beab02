"""Learning-rate schedules counted in steps, and the clock that sizes one to a time budget (`minutes`).

A schedule that decays per epoch knows nothing of how long a run will be: a short run ends with its rate
still high. Here a run's rate is `lr * factor(step / total)`, and with `minutes` the total number of
steps is not given but measured: the first steps are timed, the total is set so the run (training and
its per-epoch validations) fills the budget, and it is re-measured as the run goes, so the last step is
taken at the schedule's final rate when the clock runs out.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

SCHEDULES = ("exponential", "onecycle", "cosine")   # exponential: x lr_decay per epoch (the papers' codes)

# one-cycle as Smith & Topin (and torch's OneCycleLR defaults): from lr/25 up to lr over the first 30% of
# the steps, then cosine down to lr/(25 * 10^4). cosine: linear warm-up over 5% from lr/25, cosine to 0.
ONECYCLE_WARMUP, COSINE_WARMUP, START = 0.3, 0.05, 1 / 25
FINAL = {"onecycle": START / 1e4, "cosine": 0.0}


def _cos(a: float, b: float, t: float) -> float:
    """From a (t = 0) to b (t = 1) along half a cosine."""
    return b + (a - b) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0))) / 2


def lr_factor(kind: str, step: int, total: int | None) -> float:
    """The multiplier of the base rate before optimiser step `step` (0-based) of `total`; the schedule's
    start while total is unknown (the clock is still measuring); its final value at step total - 1."""
    if kind not in FINAL:
        raise ValueError(f"schedule {kind!r} is not counted in steps; choose one of {', '.join(FINAL)}")
    if not total:
        return START
    t = step / max(total - 1, 1)
    warmup = ONECYCLE_WARMUP if kind == "onecycle" else COSINE_WARMUP
    if t < warmup:
        up = t / warmup
        return _cos(START, 1.0, up) if kind == "onecycle" else START + (1 - START) * up
    return _cos(1.0, FINAL[kind], (t - warmup) / (1 - warmup))


@dataclass
class Clock:
    """Sizes a step schedule to `seconds` of training (steps plus the per-epoch validations).

    The first `warmup_steps` are timed (the first two, which pay for allocations, are not counted); then
    the total is planned, and planned again after every step from the recent step times and the last
    validation's, so a machine that speeds up or slows down mid-run (a shared CPU does) still ends on
    time; in the last 10% of the steps the total is held, so the schedule ends exactly. Plans are made
    only in `step_done`, just before the scheduler computes the next step's rate: the rate and the total
    it is computed for always agree. `steps_per_epoch` lets it count the validations still to come; `val_steps` guesses what one
    costs, in training steps, until one has been timed."""

    seconds: float
    steps_per_epoch: int
    val_steps: float = 0.0
    warmup_steps: int = 6
    window: int = 10                    # steps whose mean time predicts the next ones
    total: int | None = None            # planned steps of the whole run; None while measuring
    steps: int = 0                      # optimiser steps taken
    train_seconds: float = 0.0          # time in training steps
    val_seconds: list[float] = field(default_factory=list)   # time of each validation
    elapsed_before: float = 0.0         # time of the run before a resume
    _timed: list[float] = field(default_factory=list, repr=False)
    _started: float = field(default_factory=lambda: time.monotonic(), repr=False)
    _last: float | None = field(default=None, repr=False)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._started

    def start_epoch(self) -> None:
        """Steps are timed from here: the validation before is not a step's time."""
        self._last = time.monotonic()

    def step_done(self) -> bool:
        """Count a finished step (timed with the loading of its batch); True when the run has reached
        its planned total."""
        now = time.monotonic()
        dt, self._last = now - (self._last or now), now
        self.steps += 1
        self.train_seconds += dt
        if self.steps > 2:
            self._timed = (self._timed + [dt])[-self.window:]
        if (self.total is None and self.steps >= self.warmup_steps) or \
                (self.total is not None and self.steps < 0.9 * self.total):
            self.plan()
        return self.total is not None and self.steps >= self.total

    def validated(self, seconds: float) -> None:
        """A validation took `seconds`: the next plan counts the real cost of one (and the time it took)."""
        self.val_seconds.append(seconds)

    def step_time(self) -> float:
        """Mean time of the last `window` timed steps."""
        recent = self._timed[-self.window:] or [self.train_seconds / max(self.steps, 1)]
        return sum(recent) / len(recent)

    def val_time(self) -> float:
        """The last validation's time, or before the first one the guess `val_steps` training steps."""
        return self.val_seconds[-1] if self.val_seconds else self.step_time() * self.val_steps

    def plan(self) -> int:
        """Set the total to the steps that fill the remaining time, counting a validation at every epoch
        end still to come and one at the end of a last, partial epoch."""
        left = self.seconds - self.elapsed()
        step, val = self.step_time(), self.val_time()
        more = max(int(left / step), 1)
        for _ in range(4):     # validations to come depend on the steps to come: a few fixed-point rounds
            done = self.steps + more
            vals = done // self.steps_per_epoch - self.steps // self.steps_per_epoch + (done % self.steps_per_epoch > 0)
            more = max(int((left - vals * val) / step), 1)
        self.total = self.steps + more
        return self.total

    def state(self) -> dict:
        """What a checkpoint keeps to resume the clock (plain values)."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["elapsed_before"] = self.elapsed()
        return out

    @classmethod
    def from_state(cls, state: dict) -> "Clock":
        return cls(**state)

