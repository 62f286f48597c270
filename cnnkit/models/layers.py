"""The layer registry: every name the layer language accepts, as a literal dict.

`REGISTRY` holds every `torch.nn` module class (containers excluded: the YAML structure says
what they would) and cnnkit's blocks. `INFERRED` names the constructor parameters the builder
fills from the incoming shape, and which dimension each one is read from.
"""

from __future__ import annotations

import difflib

from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.models.blocks import BLOCKS
from cnnkit.models.heads import BLOCKS as LOCALIZATION_BLOCKS

_CONTAINERS = {nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict}


def _torch_layers() -> dict[str, type[nn.Module]]:
    return {
        name: obj
        for name, obj in vars(nn).items()
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj not in _CONTAINERS
        and not name.startswith("_") and obj is not nn.Module
    }


REGISTRY: dict[str, type[nn.Module]] = {**_torch_layers(), **BLOCKS, **LOCALIZATION_BLOCKS}

# parameter name -> index of the incoming shape (C, H, W) / (F,) it is read from
INFERRED = dict(in_channels=0, num_features=0, inplanes=0, in_features=-1)

REPEAT = "Repeat"  # [Repeat, N, LAYER] expands in place to N copies of LAYER


def lookup(name: str, *, where: str) -> type[nn.Module]:
    """The class for a layer name; an unknown name gets the close matches."""
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(REGISTRY), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"{where}: unknown layer '{name}'{hint} "
                          f"(any torch.nn module, or one of "
                          f"{', '.join([*BLOCKS, *LOCALIZATION_BLOCKS])})") from None
