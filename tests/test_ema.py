import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from bao.train.bao import TeacherHook
from bao.train.ema import TeacherSchedule, copy_weights, cosine_momentum, ema_update
from bao.train.engine import Hook, LoopState, train_loop


def test_cosine_momentum_endpoints_and_midpoint():
    assert cosine_momentum(0, 1322, 0.9995, 1.0) == 0.9995
    assert math.isclose(cosine_momentum(661, 1322, 0.9995, 1.0), 0.99975)
    assert cosine_momentum(1322, 1322, 0.9995, 1.0) == 1.0
    assert cosine_momentum(5000, 1322, 0.9995, 1.0) == 1.0  # clamped past the period
    quarter = 1.0 - 0.0005 * (math.cos(math.pi / 4) + 1) / 2
    assert math.isclose(cosine_momentum(1, 4, 0.9995, 1.0), quarter)


def test_schedule_copies_in_epoch_zero_and_restarts_each_epoch():
    schedule = TeacherSchedule(0.9995, 1.0, period=10)
    assert schedule.momentum(0, 5) == 0.0
    assert schedule.momentum(1, 0) == 0.9995
    assert schedule.momentum(2, 0) == 0.9995
    assert schedule.momentum(1, 10) == 1.0


def test_ema_update_and_copy():
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
    ema_update(teacher, student, momentum=0.75)
    assert torch.allclose(teacher.weight, torch.full((1, 2), 0.75 * 1.0 + 0.25 * 3.0))
    copy_weights(teacher, student)
    assert torch.equal(teacher.weight, student.weight)
    assert torch.equal(teacher.bias, student.bias)


def test_ema_copies_batchnorm_buffers():
    teacher, student = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    student.running_mean.fill_(2.0)
    ema_update(teacher, student, momentum=0.99)
    assert torch.equal(teacher.running_mean, student.running_mean)


class _Snapshots(Hook):
    """Records teacher and student weights after every step (runs after the TeacherHook)."""

    def __init__(self, teacher: nn.Module, student: nn.Module):
        self.teacher, self.student, self.rows = teacher, student, []

    def after_step(self, state, losses) -> None:
        self.rows.append((state.epoch, state.step_in_epoch, _flat(self.teacher), _flat(self.student)))


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([param.detach().flatten().clone() for param in module.parameters()])


def test_teacher_copies_in_epoch_zero_then_restarts_the_ema_at_ema_start_each_epoch():
    """The authors index the cosine by the step within the epoch, so the first step of every
    epoch after the first uses momentum ``ema_start`` exactly. A hook given the global step would
    sit at momentum 1.0 from epoch 1 on (the teacher frozen); comparing two runs that share the
    hook cannot see that, so the expectation here is written out by hand."""
    torch.manual_seed(0)
    student = nn.Linear(3, 1)
    teacher = copy.deepcopy(student).requires_grad_(False)
    batches = [{"x": torch.randn(2, 3), "y": torch.randn(2, 1)} for _ in range(3)]
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    start, period = 0.75, 3  # one cosine cycle per epoch of 3 steps; 0.75 makes the EMA visible
    snapshots = _Snapshots(teacher, student)
    hooks = [TeacherHook(teacher, student, TeacherSchedule(start, 1.0, period)), snapshots]

    def step(batch, state):
        return {"loss": F.mse_loss(student(batch["x"]), batch["y"])}

    train_loop(step, student, batches, optimizer, None, 3, torch.device("cpu"), hooks)
    rows = snapshots.rows
    assert [(epoch, index) for epoch, index, _, _ in rows] == [(e, i) for e in range(3) for i in range(3)]
    for epoch, index, teacher_now, student_now in rows[:3]:
        assert torch.equal(teacher_now, student_now)  # epoch 0: a copy after every step
    for first in (3, 6):  # the first step of epochs 1 and 2
        previous_teacher, (_, _, teacher_now, student_now) = rows[first - 1][2], rows[first]
        expected = start * previous_teacher + (1 - start) * student_now
        torch.testing.assert_close(teacher_now, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(teacher_now, previous_teacher)  # the teacher moved (not frozen at m = 1)
    # second step of epoch 1: the cosine at 1/3 of the period
    momentum = 1.0 - (1.0 - start) * (math.cos(math.pi / 3) + 1) / 2
    torch.testing.assert_close(rows[4][2], momentum * rows[3][2] + (1 - momentum) * rows[4][3], rtol=0, atol=1e-6)


def test_teacher_hook_uses_the_step_within_the_epoch():
    """Unit form of the same rule: epoch 1, step 0 of the epoch (global step 7) -> momentum 0.75."""
    teacher, student = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
    hook = TeacherHook(teacher, student, TeacherSchedule(0.75, 1.0, period=6))
    hook.after_step(LoopState(epoch=1, step=7, step_in_epoch=0, iters_per_epoch=6), {})
    assert torch.equal(teacher.weight, torch.full((1, 2), 0.75 * 1.0 + 0.25 * 3.0))  # 1.5; frozen at 1.0 if global
