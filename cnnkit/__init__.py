"""cnnkit: convolutional networks from YAML configs, trained, checkpointed and made visible."""

__version__ = "0.1.0"

from cnnkit.config import load_config  # noqa: E402
from cnnkit.models.builder import build_model  # noqa: E402
from cnnkit.training.trainer import train  # noqa: E402

__all__ = ["__version__", "build_model", "load_config", "train"]
