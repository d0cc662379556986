"""The teacher: a copy of the student in epoch 0, then an EMA with a cosine momentum schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_momentum(step_in_period: int, period: int, start: float, end: float) -> float:
    """``start`` at step 0 rising to ``end`` at ``period`` (the authors restart it every epoch)."""
    progress = min(step_in_period, period) / period
    return end - (end - start) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, copy_buffers: bool = True) -> None:
    """teacher = m * teacher + (1 - m) * student for parameters; buffers (BN stats) are copied
    when ``copy_buffers`` (an eval-mode teacher needs them), else left to the teacher itself (the
    official train-mode teacher, whose BN uses batch statistics)."""
    for teacher_param, student_param in zip(teacher.parameters(), student.parameters(), strict=True):
        teacher_param.lerp_(student_param.detach(), 1.0 - momentum)
    if copy_buffers:
        for teacher_buffer, student_buffer in zip(teacher.buffers(), student.buffers(), strict=True):
            teacher_buffer.copy_(student_buffer)


@torch.no_grad()
def copy_weights(teacher: nn.Module, student: nn.Module) -> None:
    for teacher_tensor, student_tensor in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True):
        teacher_tensor.copy_(student_tensor)


class TeacherSchedule:
    """Epoch 0: copy after every step; later: EMA with momentum indexed by the step in the epoch."""

    def __init__(self, start: float, end: float, period: int):
        self.start, self.end, self.period = start, end, period

    def momentum(self, epoch: int, step_in_epoch: int) -> float:
        if epoch == 0:
            return 0.0
        return cosine_momentum(step_in_epoch, self.period, self.start, self.end)
