"""Config files: typed models, loading with env interpolation, and precise errors."""

from crossway.config.loader import ConfigError, load_config, parse_config
from crossway.config.models import Config

__all__ = ["Config", "ConfigError", "load_config", "parse_config"]
