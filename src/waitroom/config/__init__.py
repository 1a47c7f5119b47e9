"""The config file, as one facade: every model and helper of the `waitroom_config` file.

Modules of this package: `schema` (the file: Config, rooms, sessions; loading), `fields` (the strict
base model and the field types the sections share), `store`, `rules` and `ops` (the `store:`,
`rate_limits:`/`client_ip:`/`jwt:` and `admin:`/`cluster:`/`decision_log:` sections), `yamlfile`
(reading YAML safely; one-line errors), `durations`, `overrides` (admin changes at run time) and
`reference` (docs/config.md). Code inside waitroom imports from the defining module; this facade is
for users and tests.
"""

from waitroom.config.fields import NAME_PATTERN, ConfigError, Duration, Host, Match, PathPrefix
from waitroom.config.ops import AdminConfig, ClusterConfig, DecisionLogConfig
from waitroom.config.rules import ClientIPConfig, JWTConfig, RateLimitConfig, RateLimitMatch
from waitroom.config.schema import (
    DEFAULT_CONFIG,
    Config,
    RoomConfig,
    SessionConfig,
    load_config,
    parse_config,
)
from waitroom.config.store import BreakerConfig, LiveReplicas, StoreConfig, StoreErrorPolicy, unknown_replicas
from waitroom.config.yamlfile import MAX_CONFIG_BYTES

__all__ = [
    "DEFAULT_CONFIG",
    "MAX_CONFIG_BYTES",
    "NAME_PATTERN",
    "AdminConfig",
    "BreakerConfig",
    "ClientIPConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DecisionLogConfig",
    "Duration",
    "Host",
    "JWTConfig",
    "LiveReplicas",
    "Match",
    "PathPrefix",
    "RateLimitConfig",
    "RateLimitMatch",
    "RoomConfig",
    "SessionConfig",
    "StoreConfig",
    "StoreErrorPolicy",
    "load_config",
    "parse_config",
    "unknown_replicas",
]
