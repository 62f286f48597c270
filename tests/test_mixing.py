"""Batch mixing (training/mixing.py) against torchvision's MixUp and CutMix with the same
draws, the global batch cut into rank parts, the soft-target loss's scale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from cnnkit.data.augment import batch_seed
from cnnkit.schema import AugmentConfig
from cnnkit.tasks.classification import Classification
from cnnkit.training import mixing
from cnnkit.training.mixing import BatchMix, dominant, mix_after

K = 5


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 10, generator=g), torch.randint(0, K, (n,), generator=g)


def torchvision_on(transform: v2.Transform, x, y, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(x.clone(), y.clone())


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_one_process_mixes_as_torchvision_does_with_the_same_draws(kind):
    aug = AugmentConfig(mixup_alpha=0.2 if kind == "mixup" else 0.0,
                        cutmix_alpha=1.0 if kind == "cutmix" else 0.0)
    mix = BatchMix(aug, num_classes=K, seed=3)
    x, y = batch()
    got_x, got_y = mix(x, y, epoch=2, index=5)
    transform = mix.mixup or mix.cutmix
    want_x, want_y = torchvision_on(transform, x, y, batch_seed(3 ^ mixing._SALT, 2, 5))
    torch.testing.assert_close(got_x, want_x, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_y, want_y, rtol=0, atol=1e-6)
    assert not torch.equal(got_x, x)  # it mixed
    assert torch.allclose(got_y.sum(1), torch.ones(8))
    again = mix(x, y, epoch=2, index=5)  # a resumed run: the same batch, the same draws
    assert torch.equal(again[0], got_x) and torch.equal(again[1], got_y)
    other = mix(x, y, epoch=2, index=6)
    assert not torch.equal(other[0], got_x)


@pytest.mark.parametrize("transform", [v2.MixUp(alpha=0.4, num_classes=K),
                                       v2.CutMix(alpha=1.0, num_classes=K)],
                         ids=["mixup", "cutmix"])
def test_rank_parts_with_the_previous_last_image_make_the_global_batch(transform):
    """What each of 3 ranks computes (its part, the last image of the rank before in front)
    put together is the one-process result: the pairing and draws do not depend on ranks."""
    x, y = batch(9, seed=1)
    whole = torchvision_on(transform, x, y, 77)
    parts = [(0, 4), (4, 7), (7, 9)]
    got = [mix_after(transform, x[a:b], y[a:b], x[a - 1:a] if a else x[-1:],
                     y[a - 1:a] if a else y[-1:], seed=77) for a, b in parts]
    torch.testing.assert_close(torch.cat([g[0] for g in got]), whole[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat([g[1] for g in got]), whole[1], rtol=0, atol=1e-6)


def test_mix_prob_and_switch_prob_choose_per_batch():
    both = BatchMix(AugmentConfig(mixup_alpha=0.2, cutmix_alpha=1.0), num_classes=K, seed=0)
    kinds = [type(both.choose(s)).__name__ for s in range(400)]
    assert 150 < kinds.count("CutMix") < 250 and kinds.count("NoneType") == 0  # 50/50, all
    half = BatchMix(AugmentConfig(cutmix_alpha=1.0, mix_prob=0.5), num_classes=K, seed=0)
    kinds = [type(half.choose(s)).__name__ for s in range(400)]
    assert 150 < kinds.count("NoneType") < 250 and "MixUp" not in kinds
    never = BatchMix(AugmentConfig(mixup_alpha=1.0, mix_prob=0.0), num_classes=K, seed=0)
    x, y = batch()
    got_x, got_y = never(x, y, epoch=0, index=0)
    assert torch.equal(got_x, x) and torch.equal(got_y, F.one_hot(y, K).float())


def test_soft_one_hot_targets_have_the_class_index_loss_with_weights_and_smoothing():
    weights = [0.5, 2.0, 1.0, 3.0, 0.25]
    task = Classification(label_smoothing=0.1, class_weights=weights)
    logits, y = torch.randn(8, K, generator=torch.Generator().manual_seed(4)), batch()[1]
    by_index = task.loss(logits, y)
    by_soft = task.loss(logits, F.one_hot(y, K).float())
    torch.testing.assert_close(by_soft, by_index)
    assert torch.isclose(by_index, F.cross_entropy(logits, y, weight=torch.tensor(weights),
                                                   label_smoothing=0.1))


def test_a_mixed_target_weighs_both_classes_by_weight_and_share():
    """One example, 0.7 of class 0 (weight 1) and 0.3 of class 1 (weight 3), no smoothing:
    (0.7 * 1 * -log p0 + 0.3 * 3 * -log p1) / (0.7 * 1 + 0.3 * 3)."""
    task = Classification(class_weights=[1.0, 3.0])
    logits = torch.tensor([[0.2, -0.4]])
    log_p = F.log_softmax(logits, 1)[0]
    want = -(0.7 * log_p[0] + 0.9 * log_p[1]) / 1.6
    torch.testing.assert_close(task.loss(logits, torch.tensor([[0.7, 0.3]])), want)


def test_metrics_count_against_the_dominant_label():
    assert dominant(torch.tensor([[0.3, 0.7], [0.9, 0.1]])).tolist() == [1, 0]
    assert dominant(torch.tensor([2, 0])).tolist() == [2, 0]
