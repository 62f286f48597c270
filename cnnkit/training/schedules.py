"""Learning-rate schedules as pure functions of the optimizer step: f(k) multiplies train.lr.

Step k counts optimizer steps from 0: the first step runs at train.lr × f(0), and epoch e
begins at step e × steps_per_epoch. Times in the config are in epochs (fractions allowed) and
become steps here. The names and formulas (T = total steps, W = warmup steps):

    constant   f(k) = 1
    step       f(k) = gamma ** floor(k / (step_size × steps_per_epoch))
    multistep  f(k) = gamma ** (number of milestones m with k >= m × steps_per_epoch)
    cosine     f(k) = r + (1 - r) × (1 + cos(pi × (k - W) / (T - W))) / 2,  r = min_lr / lr
    onecycle   torch's OneCycleLR (cosine up to train.lr over pct_start × T steps, then down)

A warmup of W > 0 steps multiplies any of the first four by min(1, (k + 1) / W); one-cycle
has its own rise and refuses a separate warmup.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from cnnkit.schema import ScheduleConfig

Factor = Callable[[int], float]


def lr_factor(cfg: ScheduleConfig, *, lr: float, steps_per_epoch: int, total_steps: int
              ) -> Factor:
    """f(k) for the schedule `cfg` names (its ranges checked by `validate.validate`)."""
    if cfg.name == "onecycle":  # the schema refuses a separate warmup for it
        return _onecycle(cfg, total_steps)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    main = SCHEDULES[cfg.name](cfg, lr=lr, steps_per_epoch=steps_per_epoch,
                               total_steps=total_steps, warmup=warmup)
    if not warmup:
        return main
    return lambda k: min(1.0, (k + 1) / warmup) * main(k)


def _constant(cfg: ScheduleConfig, **_) -> Factor:
    return lambda k: 1.0


def _step(cfg: ScheduleConfig, *, steps_per_epoch: int, **_) -> Factor:
    every = cfg.step_size * steps_per_epoch  # steps between decays
    return lambda k: cfg.gamma ** math.floor(k / every)


def _multistep(cfg: ScheduleConfig, *, steps_per_epoch: int, **_) -> Factor:
    at = sorted(m * steps_per_epoch for m in cfg.milestones)  # steps where lr *= gamma
    return lambda k: cfg.gamma ** sum(k >= m for m in at)


def _cosine(cfg: ScheduleConfig, *, lr: float, total_steps: int, warmup: int, **_) -> Factor:
    floor = cfg.min_lr / lr
    span = max(total_steps - warmup, 1)  # the steps the curve falls over, after warmup

    def f(k: int) -> float:
        t = min(max(k - warmup, 0) / span, 1.0)
        return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * t)) / 2.0

    return f


def _onecycle(cfg: ScheduleConfig, total_steps: int) -> Factor:
    """The factor torch.optim.lr_scheduler.OneCycleLR gives (two phases, cosine annealing)."""
    start = 1.0 / cfg.div_factor
    end = start / cfg.final_div_factor
    peak_step = float(cfg.pct_start * total_steps) - 1
    last_step = total_steps - 1

    def f(k: int) -> float:
        if k <= peak_step:
            return _cos_between(start, 1.0, _fraction(k, peak_step))
        return _cos_between(1.0, end, min(_fraction(k - peak_step, last_step - peak_step), 1.0))

    return f


def _fraction(done: float, span: float) -> float:
    return done / span if span > 0 else 1.0  # runs of one or two steps have no room to ramp


def _cos_between(a: float, b: float, t: float) -> float:
    return b + (a - b) / 2.0 * (math.cos(math.pi * t) + 1)


SCHEDULES = dict(constant=_constant, step=_step, multistep=_multistep, cosine=_cosine)
