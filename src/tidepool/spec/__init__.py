"""The spec layer: Fluid-compatible YAML in, resolved runtime configuration out (pure, no network).

Use :func:`load_files` (or :func:`load_text`) to get a :class:`SpecBundle`; its ``datasets`` map
holds the :class:`DatasetConfig` objects the runtime consumes. Every problem is raised at once as
:class:`tidepool.core.errors.SpecError`.
"""

from __future__ import annotations

from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig, TierConfig
from tidepool.spec.describe import describe
from tidepool.spec.loader import LoadedDocument, SpecBundle, load_files, load_text
from tidepool.spec.models import (
    API_VERSIONS,
    KINDS,
    NODEPOOL_KEYS,
    DataLoad,
    Dataset,
    Mount,
    Runtime,
    Secret,
)
from tidepool.spec.options import OptionError, Origin, map_options, mount_config
from tidepool.spec.problems import FieldErrors, Source
from tidepool.spec.runtime import DEFAULT_CACHE_DIR, default_runtime, runtime_config
from tidepool.spec.secrets import SecretStore, secret_env_var

__all__ = [
    "API_VERSIONS",
    "DEFAULT_CACHE_DIR",
    "KINDS",
    "NODEPOOL_KEYS",
    "DataLoad",
    "Dataset",
    "DatasetConfig",
    "FieldErrors",
    "LoadedDocument",
    "Mount",
    "MountConfig",
    "OptionError",
    "Origin",
    "Runtime",
    "RuntimeConfig",
    "Secret",
    "SecretStore",
    "Source",
    "SpecBundle",
    "TierConfig",
    "default_runtime",
    "describe",
    "load_files",
    "load_text",
    "map_options",
    "mount_config",
    "runtime_config",
    "secret_env_var",
]
