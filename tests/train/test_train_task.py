"""Task losses and eval metrics against explicit formulas."""

import math

import torch

from weyl.train.task import ClassificationTask, LanguageModelingTask, build_task


def test_lm_loss_and_eval_metrics_match_an_explicit_loop():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    nll = [-torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b in range(2) for t in range(3)]
    task = LanguageModelingTask()
    assert torch.allclose(task.loss(logits, targets), torch.stack(nll).mean())
    m = task.eval_metrics(task.eval_sums(logits, targets) + task.eval_sums(logits, targets))
    assert math.isclose(m["loss"], float(torch.stack(nll).mean()), rel_tol=1e-6)
    assert math.isclose(m["ppl"], math.exp(m["loss"]), rel_tol=1e-9)
    assert task.units(torch.zeros(2, 3)) == 6


def test_classification_soft_and_smoothed_targets_and_top1():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    task = build_task("classification", label_smoothing=0.1)
    # label smoothing ε: target = (1-ε)·onehot + ε/C
    soft = torch.nn.functional.one_hot(labels, 3).float() * 0.9 + 0.1 / 3
    ref = -(soft * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert torch.allclose(task.loss(logits, labels), ref, atol=1e-6)
    assert torch.allclose(task.loss(logits, soft), ref, atol=1e-6)  # mixup-style soft targets
    m = task.eval_metrics(task.eval_sums(logits, labels))
    correct = sum(int(logits[i].argmax() == labels[i]) for i in range(4))
    assert m["top1"] == 100.0 * correct / 4
    assert isinstance(task, ClassificationTask) and task.units(torch.zeros(4, 1, 8, 8)) == 4
