"""Lane configuration: pydantic models and ``load_config(path)``.

Every field has a description and bounds; unknown keys are errors (a misspelt key must never be
silently ignored on a border lane). ``load_config`` turns every problem into a ``ConfigProblem``
naming the file, the line where it can find one, the key path, the value and what is allowed,
so ``lane-agent config check`` and the service print the same thing and exit 78 (EX_CONFIG).

Relative paths in the file are resolved against the directory of the config file, so a lane
directory can be moved as a whole.

The sections: ``[lane]`` (:mod:`agent.config.lane`), ``[reader]`` by family
(:mod:`agent.config.readers`), the other parts of the agent (:mod:`agent.config.sections`), the
whole file (:mod:`agent.config.model`), reading and reporting (:mod:`agent.config.loading`).
"""

from agent.config.lane import (
    AntennasConfig,
    AssociationConfig,
    CorrelationConfig,
    LaneConfig,
    LoopConfig,
)
from agent.config.loading import ConfigError, ConfigProblem, load_config
from agent.config.model import AgentConfig
from agent.config.readers import (
    LaneControllerConfig,
    LaneControllerReaderConfig,
    LlrpReaderConfig,
    ReaderConfig,
)
from agent.config.sections import (
    CacheConfig,
    CameraConfig,
    LiveConfig,
    LoggingConfig,
    MqttConfig,
    OutboxConfig,
    PageConfig,
    ServiceConfig,
    VisionConfig,
)

__all__ = [
    "AgentConfig",
    "AntennasConfig",
    "AssociationConfig",
    "CacheConfig",
    "CameraConfig",
    "ConfigError",
    "ConfigProblem",
    "CorrelationConfig",
    "LaneConfig",
    "LaneControllerConfig",
    "LaneControllerReaderConfig",
    "LiveConfig",
    "LlrpReaderConfig",
    "LoggingConfig",
    "LoopConfig",
    "MqttConfig",
    "OutboxConfig",
    "PageConfig",
    "ReaderConfig",
    "ServiceConfig",
    "VisionConfig",
    "load_config",
]
