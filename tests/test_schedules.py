"""Each schedule gives the documented learning rate at known optimizer steps."""

import math

import pytest
import torch

from cnnkit.errors import ConfigError
from cnnkit.schema import Config, ModelConfig, ScheduleConfig, TrainConfig
from cnnkit.training.optim import build_scheduler
from cnnkit.validate import validate

LR = 0.1
SPE = 10  # steps per epoch


def lrs(schedule: ScheduleConfig, *, epochs: int = 10, steps: int | None = None) -> list[float]:
    """The learning rate each optimizer step runs at, as the trainer drives the scheduler."""
    cfg = TrainConfig(lr=LR, epochs=epochs, optimizer="sgd", schedule=schedule)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=SPE)
    seen = []
    for _ in range(steps or epochs * SPE):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_constant_is_the_default_and_keeps_the_lr():
    assert TrainConfig().schedule == ScheduleConfig(name="constant")
    assert lrs(ScheduleConfig()) == [LR] * 100


def test_step_multiplies_by_gamma_every_step_size_epochs():
    seen = lrs(ScheduleConfig(name="step", step_size=3, gamma=0.5))
    assert seen[0] == seen[29] == LR
    assert seen[30] == seen[59] == pytest.approx(LR / 2)
    assert seen[60] == pytest.approx(LR / 4) and seen[99] == pytest.approx(LR / 8)


def test_multistep_decays_at_the_milestone_epochs():
    seen = lrs(ScheduleConfig(name="multistep", milestones=[2, 7.5], gamma=0.1))
    assert seen[19] == LR
    assert seen[20] == seen[74] == pytest.approx(0.01)
    assert seen[75] == seen[99] == pytest.approx(0.001)


def test_cosine_falls_from_lr_to_min_lr():
    seen = lrs(ScheduleConfig(name="cosine", min_lr=0.01))
    assert seen[0] == LR
    assert seen[50] == pytest.approx(0.01 + 0.09 * 0.5)  # half-way: the mean of the two
    assert seen[25] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2)
    assert seen[99] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 0.99)) / 2)
    assert all(a >= b for a, b in zip(seen, seen[1:]))


def test_linear_warmup_then_cosine():
    seen = lrs(ScheduleConfig(name="cosine", warmup_epochs=2))
    assert seen[:3] == pytest.approx([LR / 20, 2 * LR / 20, 3 * LR / 20])  # (k + 1) / W
    assert seen[19] == pytest.approx(LR)  # the last warmup step reaches train.lr
    assert seen[20] == pytest.approx(LR)  # and the cosine starts from there
    assert seen[60] == pytest.approx(LR / 2)  # half-way through the 80 steps after warmup


def test_warmup_on_a_constant_schedule():
    seen = lrs(ScheduleConfig(warmup_epochs=0.5))
    assert seen[:6] == pytest.approx([LR * k / 5 for k in range(1, 6)] + [LR])
    assert seen[99] == LR


def test_onecycle_matches_torch_onecyclelr():
    seen = lrs(ScheduleConfig(name="onecycle", pct_start=0.25, div_factor=10,
                              final_div_factor=100))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=100, pct_start=0.25, div_factor=10,
        final_div_factor=100, anneal_strategy="cos", cycle_momentum=False)
    expected = []
    for _ in range(100):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert seen == pytest.approx(expected, rel=1e-9)
    assert seen[0] == pytest.approx(LR / 10) and seen[24] == pytest.approx(LR)
    assert seen[99] == pytest.approx(LR / 1000)


def test_scheduler_state_resumes_at_the_same_step():
    cfg = TrainConfig(lr=LR, epochs=10, schedule=ScheduleConfig(name="cosine"))
    opt_a = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched_a = build_scheduler(opt_a, cfg, steps_per_epoch=SPE)
    for _ in range(37):
        opt_a.step()
        sched_a.step()
    opt_b = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched_b = build_scheduler(opt_b, cfg, steps_per_epoch=SPE)
    opt_b.load_state_dict(opt_a.state_dict())
    sched_b.load_state_dict(sched_a.state_dict())
    opt_a.step(), sched_a.step(), opt_b.step(), sched_b.step()
    assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"] != LR


@pytest.mark.parametrize(("schedule", "expected"), [
    (ScheduleConfig(name="step", step_size=0), "train.schedule.step_size: expected a positive"),
    (ScheduleConfig(name="multistep"), "train.schedule.milestones: expected a non-empty list"),
    (ScheduleConfig(name="cosine", min_lr=1.0), "train.schedule.min_lr: expected a learning "
                                                "rate in [0, train.lr = 0.1], found 1.0"),
    (ScheduleConfig(name="onecycle", warmup_epochs=1), "onecycle has its own warmup"),
    (ScheduleConfig(name="onecycle", pct_start=1.5), "train.schedule.pct_start: expected a "
                                                     "fraction in (0, 1), found 1.5"),
])
def test_bad_schedules_are_one_line_errors(schedule, expected):
    cfg = Config(ModelConfig(input=[1, 28, 28], layers=[]), source="x.yaml",
                 train=TrainConfig(lr=LR, optimizer="sgd", schedule=schedule))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert message.startswith("x.yaml: train.schedule.") and expected in message
    assert "\n" not in message
