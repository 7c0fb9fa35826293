"""The whole lane config file (``AgentConfig``) and what is assembled from several sections."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from agent.config.base import _Section
from agent.config.lane import LaneConfig
from agent.config.readers import LaneControllerConfig, LaneControllerReaderConfig, ReaderConfig
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
from agent.lane.correlator import CorrelationSettings
from agent.lane.policy import LanePolicy


class AgentConfig(_Section):
    """The whole lane config file."""

    lane: LaneConfig = Field(description="Lane identity and rules.")
    reader: ReaderConfig = Field(
        default_factory=LaneControllerReaderConfig,
        description="Where card reads and loop edges come from: the reader family by its type.",
    )
    controller: LaneControllerConfig | None = Field(
        default=None,
        description="Before reader families: the lane controller; read as [reader] with type = "
        '"lane_controller".',
    )
    cache: CacheConfig = Field(default_factory=CacheConfig, description="Credential cache.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable outbox.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Uplink to central.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="Engine loop.")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Lane camera.")
    vision: VisionConfig = Field(default_factory=VisionConfig, description="Plate reading.")
    live: LiveConfig = Field(
        default_factory=LiveConfig, description="Live crossing events for the booth."
    )
    page: PageConfig = Field(
        default_factory=PageConfig, description="The live lane page and Prometheus metrics."
    )

    @model_validator(mode="after")
    def _controller_section_is_the_lane_controller_reader(self) -> Self:
        if self.controller is None:
            return self
        if "reader" in self.model_fields_set:
            raise ValueError(
                "[controller] and [reader] are both given: [controller] is the older name of "
                '[reader] with type = "lane_controller"; keep one'
            )
        legacy = LaneControllerReaderConfig(**self.controller.model_dump())
        object.__setattr__(self, "reader", legacy)  # frozen: set once, while validating
        return self

    @model_validator(mode="after")
    def _updates_subscriber_has_its_own_certificate(self) -> Self:
        if (
            self.cache.trust_file is not None
            and self.mqtt.tls
            and self.mqtt.updates_cert_file is None
        ):
            raise ValueError(
                "mqtt.updates_cert_file and mqtt.updates_key_file are required with tls = true and "
                "cache.trust_file set: the cache-updates subscriber is a second connection and "
                f"needs its own certificate (CN '{self.lane.port_id}/{self.lane.lane_id}/cache')"
            )
        return self

    @model_validator(mode="after")
    def _current_vehicle_outlives_the_longest_stay(self) -> Self:
        longest = self.lane.correlation.max_open_s
        if self.live.enabled and self.live.current_expiry_s <= longest:
            raise ValueError(
                f"live.current_expiry_s ({self.live.current_expiry_s}) must be longer than "
                f"lane.correlation.max_open_s ({longest:g}): the vehicle at the booth would "
                "vanish from the retained current topic while it is still there"
            )
        return self

    def correlation_settings(self) -> CorrelationSettings:
        """The lane core's correlation settings: the lane's, with plate pre-roll in a lane with
        a camera."""
        correlation = self.lane.correlation_settings()
        if self.camera.enabled:
            correlation = dataclasses.replace(
                correlation, plate_preroll_s=self.vision.plate_preroll_s
            )
        return correlation

    def lane_policy(self) -> LanePolicy:
        """The lane's policy, assembled here only: its rules, the plate check in a lane with a
        camera, the longest the cache data may go without being vouched for."""
        policy = self.lane.policy()
        if self.camera.enabled:
            policy = dataclasses.replace(policy, plate_check=self.vision.plate_check())
        age = self.cache.max_cache_age_s
        return dataclasses.replace(policy, max_cache_age_s=age or None)

    @property
    def mqtt_client_id(self) -> str:
        """The client id used on the broker."""
        return self.mqtt.client_id or f"lane-{self.lane.port_id}-{self.lane.lane_id}"

    def with_paths_relative_to(self, base: Path) -> AgentConfig:
        """Resolve relative file paths against ``base`` (the config file's directory)."""
        return self.model_copy(
            update={
                "cache": self.cache.relative_to(base),
                "outbox": self.outbox.model_copy(update={"path": base / self.outbox.path}),
                "mqtt": self.mqtt.with_credentials_from(
                    base, os.environ.get("CREDENTIALS_DIRECTORY")
                ),
                "page": self.page.with_credentials_from(
                    base, os.environ.get("CREDENTIALS_DIRECTORY")
                ),
                "vision": self.vision.model_copy(
                    update={"models_dir": base / self.vision.models_dir}
                )
                if self.vision.models_dir is not None
                else self.vision,
            }
        )
