"""A frozen int8 Linear for training on CPU that keeps no activation for its own backward.

bitsandbytes trains a CPU Linear8bitLt through `MatMul8bitFp`, which stores
its input on the autograd context as a plain attribute (`ctx.A`) for a weight
gradient a frozen weight never needs. A plain attribute also escapes the
saved-tensor hooks that activation checkpointing relies on, so every 8-bit
layer's input (the MLP's 4x-wide hidden one included) stayed alive from the
forward to the backward even inside checkpointed blocks. Here the function
saves only the int8 weight and its per-row scale (parameters, alive anyway)
and dequantizes the weight again in backward: the same arithmetic as
bitsandbytes, so outputs and gradients are bit-identical.
"""

from __future__ import annotations

import bitsandbytes as bnb
import torch


def dequantize(int8_weight: torch.Tensor, row_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bitsandbytes' vector-wise dequantization: each row times its absmax / 127."""
    return int8_weight.to(dtype, copy=True).mul_(row_scale.unsqueeze(1).mul(1.0 / 127.0))


class FrozenInt8Linear(torch.autograd.Function):
    """y = x W^T + b with W = dequantize(int8, scale); W gets no gradient, only x (and b if it trains)."""

    @staticmethod
    def forward(ctx, x, int8_weight, row_scale, bias):
        ctx.save_for_backward(int8_weight, row_scale)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, dequantize(int8_weight, row_scale, x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_out):
        int8_weight, row_scale = ctx.saved_tensors
        grad_x = grad_bias = None
        flat = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[0]:
            grad_x = (flat @ dequantize(int8_weight, row_scale, grad_out.dtype)).view(*grad_out.shape[:-1], -1)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = flat.sum(0)
        return grad_x, None, None, grad_bias


class Linear8bitFrozen(bnb.nn.Linear8bitLt):
    """bitsandbytes Linear8bitLt (same weights, state dict and inference path) whose training forward on CPU
    saves no activation; see the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled() and x.device.type == "cpu"):
            return super().forward(x)
        if self.weight.CB is not None:
            self.init_8bit_state()  # bitsandbytes moves CB/SCB from the parameter into the layer's state
        bias = self.bias
        if bias is not None and bias.dtype != x.dtype:
            bias.data = bias.data.to(x.dtype)
        return FrozenInt8Linear.apply(x, self.state.CB, self.state.SCB, bias)
