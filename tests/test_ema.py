import math

import torch
from torch import nn

from bao.train.ema import TeacherSchedule, copy_weights, cosine_momentum, ema_update


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
