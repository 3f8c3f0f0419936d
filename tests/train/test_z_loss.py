"""trainer.z_loss: PaLM's coefficient × mean log²Z, value and gradient against autograd of the
formula written out; it joins the training objective only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from weyl.train.task import LanguageModelingTask, build_task, z_loss
from weyl.train.train_config import TrainerConfig
from weyl.value_checks import ConfigError


def _reference(logits: torch.Tensor, coef: float) -> torch.Tensor:
    """coef · mean over tokens of (log Σ_v e^{logit_v})², written with exp/sum/log in fp64."""
    log_z = logits.double().exp().sum(-1).log()
    return coef * (log_z**2).mean()


def test_z_loss_value_and_gradient_match_the_formula():
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 7) * 2.0 + 1.0).requires_grad_()
    got = z_loss(logits, 1e-4)
    (grad_got,) = torch.autograd.grad(got, logits)
    ref_logits = logits.detach().double().requires_grad_()
    ref = _reference(ref_logits, 1e-4)
    (grad_ref,) = torch.autograd.grad(ref, ref_logits)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_got.double(), grad_ref, rtol=1e-5, atol=1e-12)
    # d/dlogit of coef·log²Z per token is 2·coef·log Z·softmax / number of tokens
    soft = torch.softmax(logits.detach().double(), -1)
    log_z = torch.logsumexp(logits.detach().double(), -1, keepdim=True)
    torch.testing.assert_close(grad_got.double(), 2e-4 * log_z * soft / 15, rtol=1e-5, atol=0)


def test_task_keeps_the_cross_entropy_as_its_loss():
    torch.manual_seed(1)
    logits, targets = torch.randn(2, 4, 9), torch.randint(0, 9, (2, 4))
    task = LanguageModelingTask(z_loss=1e-4)
    torch.testing.assert_close(
        task.loss(logits, targets), F.cross_entropy(logits.view(8, 9), targets.view(8))
    )
    aux = task.aux_losses(logits)
    assert set(aux) == {"z_loss"}
    torch.testing.assert_close(aux["z_loss"].double(), _reference(logits, 1e-4))
    assert LanguageModelingTask().aux_losses(logits) == {}
    assert build_task("classification").aux_losses(logits) == {}


def test_bad_z_loss_values_name_the_key():
    with pytest.raises(ConfigError, match=r"^trainer\.z_loss: must be >= 0"):
        TrainerConfig(z_loss=-1e-4)
    with pytest.raises(ValueError, match=r"^trainer\.z_loss=0\.0001: .*image classification"):
        build_task("classification", z_loss=1e-4)
