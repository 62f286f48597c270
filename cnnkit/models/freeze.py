"""Fine-tuning controls by module path: frozen parts (`train.freeze`), per-part learning rates
(`train.lr_groups`) and the epoch the frozen parts rejoin training (`train.unfreeze_at`).

A prefix matches whole path segments: `layer1` covers `layer1.0.conv1.weight`, not
`layer10.*`. Frozen parameters get `requires_grad=False` and stay out of the optimizer; frozen
norm layers (BatchNorm and others that track running statistics) are kept in eval mode by
`Network.train`, so neither their weights nor their statistics move.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.schema import TrainConfig


def under(path: str, prefix: str) -> bool:
    """Whether module path `path` is `prefix` or inside it."""
    return path == prefix or path.startswith(prefix + ".")


def check_prefixes(model: nn.Module, prefixes: Iterable[str | int], *, key: str,
                   source: str | None = None) -> list[str]:
    """The prefixes as strings; one that matches no module is an error listing close paths."""
    paths = [name for name, _ in model.named_modules() if name]
    paths += [name for name, _ in model.named_parameters()]  # a prefix may name one tensor
    out = []
    for prefix in (str(p) for p in prefixes):
        if not any(under(p, prefix) for p in paths):
            close = difflib.get_close_matches(prefix, paths, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            tops = [n for n, _ in model.named_children()]
            raise ConfigError(f"{_at(source)}{key}: no module at '{prefix}'{hint} (top-level "
                              f"modules: {', '.join(tops)})")
        out.append(prefix)
    return out


def freeze(model: nn.Module, prefixes: Iterable[str | int], *, source: str | None = None
           ) -> list[str]:
    """Freeze the modules under `prefixes`; returns the frozen parameter names."""
    prefixes = check_prefixes(model, prefixes, key="train.freeze", source=source)
    frozen = [name for name, _ in model.named_parameters() if any(under(name, p) for p in prefixes)]
    if frozen and len(frozen) == len(list(model.parameters())):
        raise ConfigError(f"{_at(source)}train.freeze: {prefixes} covers every parameter, so "
                          f"nothing would train (leave the head out)")
    chosen = set(frozen)
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(False)
    norms = [m for name, m in model.named_modules()
             if getattr(m, "track_running_stats", False) and any(under(name, p) for p in prefixes)]
    model.frozen_norms = norms  # Network.train keeps these in eval mode from now on
    for module in norms:
        module.eval()
    return frozen


def freeze_for_training(model: nn.Module, cfg: TrainConfig, *, source: str | None = None
                        ) -> list[str]:
    """Apply train.freeze (that train.unfreeze_at has something to lift is the schema's rule)."""
    return freeze(model, cfg.freeze, source=source)


# the layers whose parameters train.norm_weight_decay covers (torchvision's set_weight_decay)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, cfg: TrainConfig, *, trainable: bool = True,
                 source: str | None = None) -> list[dict]:
    """Optimizer groups of the parameters with `requires_grad == trainable`: train.lr for
    those in no lr_group first, then one group per lr_group, empty groups left out. Where
    train.norm_weight_decay or bias_weight_decay is set, each is split further by weight decay
    (decay_of), each group with its own "weight_decay"; with both null the groups are those
    of cnnkit before the keys, so an older last.pt resumes."""
    rules = _lr_rules(model, cfg, source=source)
    decays = decay_of(model, cfg)
    groups: dict[tuple[float, float | None], list[torch.nn.Parameter]] = {(cfg.lr, None): []}
    for name, param in model.named_parameters():
        if param.requires_grad == trainable:
            key = (_lr_of(name, rules, cfg.lr), decays.get(name))
            groups.setdefault(key, []).append(param)
    return [{"params": params, "lr": lr} | ({} if decay is None else {"weight_decay": decay})
            for (lr, decay), params in groups.items() if params]


def decay_of(model: nn.Module, cfg: TrainConfig) -> dict[str, float]:
    """Parameter name -> weight decay, for every parameter when train.norm_weight_decay or
    bias_weight_decay is set (none otherwise), as torchvision's set_weight_decay: a bias
    (a norm layer's too) takes bias_weight_decay where set, a norm layer's other parameters
    norm_weight_decay where set, the rest train.weight_decay."""
    if cfg.norm_weight_decay is None and cfg.bias_weight_decay is None:
        return {}
    out = {}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if name == "bias" and cfg.bias_weight_decay is not None:
                out[full] = cfg.bias_weight_decay
            elif isinstance(module, NORM_LAYERS) and cfg.norm_weight_decay is not None:
                out[full] = cfg.norm_weight_decay
            else:
                out[full] = cfg.weight_decay
    return out


def decay_counts(model: nn.Module, cfg: TrainConfig) -> dict[float, int]:
    """Trainable parameters (numbers, not tensors) per weight decay, for the start header."""
    decays, counts = decay_of(model, cfg), {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decay = decays.get(name, cfg.weight_decay)
            counts[decay] = counts.get(decay, 0) + param.numel()
    return counts


def _lr_rules(model: nn.Module, cfg: TrainConfig, *, source: str | None
              ) -> list[tuple[str, float]]:
    """(prefix, lr) pairs, longest prefix first so the most specific one wins. The schema
    checks each lr and that no prefix is in two groups; only the model knows the paths."""
    rules: dict[str, float] = {}
    for i, group in enumerate(cfg.lr_groups):
        key = f"train.lr_groups.{i}.modules"
        for prefix in check_prefixes(model, group.modules, key=key, source=source):
            rules[prefix] = group.lr
    return sorted(rules.items(), key=lambda rule: -len(rule[0]))


def _lr_of(name: str, rules: list[tuple[str, float]], default: float) -> float:
    return next((lr for prefix, lr in rules if under(name, prefix)), default)


def unfreeze(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, cfg: TrainConfig,
             *, source: str | None = None) -> int:
    """Lift train.freeze: the frozen parameters join the optimizer, each at its group's
    learning rate, and the scheduler scales them like the others. Returns how many joined."""
    groups = param_groups(model, cfg, trainable=False, source=source)
    for group in groups:
        for param in group["params"]:
            param.requires_grad_(True)
        optimizer.add_param_group(group)
        _extend_scheduler(scheduler, optimizer.param_groups[-1])
    model.frozen_norms = []
    if model.training:
        model.train()
    return sum(p.numel() for g in groups for p in g["params"])


def _extend_scheduler(scheduler, group: dict) -> None:
    """Give a new optimizer group its place in a per-group scheduler (LambdaLR and kin keep
    `base_lrs` and `lr_lambdas` lists, one entry per group)."""
    group.setdefault("initial_lr", group["lr"])
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs.append(group["initial_lr"])
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas:
        lambdas.append(lambdas[0])
        group["lr"] = group["initial_lr"] * lambdas[0](scheduler.last_epoch)


def _at(source: str | None) -> str:
    return f"{source}: " if source else ""
