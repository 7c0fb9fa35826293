"""Topic names: the layout central relies on, and rejection of ids that would break the tree."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.wire.topics import (
    DEFAULT_PREFIX,
    InvalidTopicPartError,
    Topics,
    all_crossings_filter,
    shared_subscription,
    validate_topic_name,
)


def test_lane_topics_sit_under_prefix_port_and_lane() -> None:
    topics = Topics(DEFAULT_PREFIX, "blaine", "lane-03")
    assert topics.crossing == "lane-agent/v1/blaine/lane-03/crossing"
    assert topics.availability == "lane-agent/v1/blaine/lane-03/availability"
    assert topics.status == "lane-agent/v1/blaine/lane-03/status"


def test_central_filters_match_every_lane_and_share_the_load() -> None:
    assert all_crossings_filter() == "lane-agent/v1/+/+/crossing"
    assert all_crossings_filter("ops/v2") == "ops/v2/+/+/crossing"
    assert shared_subscription("central", all_crossings_filter()) == (
        "$share/central/lane-agent/v1/+/+/crossing"
    )


@pytest.mark.parametrize(
    ("prefix", "port_id", "lane_id", "bad_part"),
    [
        ("lane-agent/v1", "port+1", "l1", "port_id"),
        ("lane-agent/v1", "p1", "lane#", "lane_id"),
        ("lane-agent/v1", "p\x001", "l1", "port_id"),
        ("lane-agent/v1", "", "l1", "port_id"),
        ("lane-agent/v1", "p1", "a/b", "lane_id"),
        ("lane-agent//v1", "p1", "l1", "prefix"),
        ("/lane-agent", "p1", "l1", "prefix"),
        ("lane-agent/", "p1", "l1", "prefix"),
        ("", "p1", "l1", "prefix"),
        ("lane-agent/+", "p1", "l1", "prefix"),
        ("$SYS/lanes", "p1", "l1", "prefix"),
    ],
)
def test_ids_that_would_break_the_topic_tree_are_rejected_naming_the_part(
    prefix: str, port_id: str, lane_id: str, bad_part: str
) -> None:
    with pytest.raises(InvalidTopicPartError) as raised:
        Topics(prefix, port_id, lane_id)
    assert raised.value.part == bad_part
    assert str(raised.value).startswith(bad_part)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("group", ["", "a/b", "g+", "g#"])
def test_shared_subscription_group_must_be_one_plain_level(group: str) -> None:
    with pytest.raises(InvalidTopicPartError) as raised:
        shared_subscription(group, "a/#")
    assert raised.value.part == "group"


def test_shared_subscription_rejects_an_empty_or_already_shared_filter() -> None:
    with pytest.raises(InvalidTopicPartError):
        shared_subscription("g", "")
    with pytest.raises(InvalidTopicPartError):
        shared_subscription("g", "$share/h/a/#")


def test_topic_names_longer_than_mqtt_allows_are_rejected() -> None:
    validate_topic_name("a" * 65535)
    with pytest.raises(InvalidTopicPartError):
        validate_topic_name("é" * 40000)


plain_level = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/+#\x00"), min_size=1
)


@given(port_id=plain_level, lane_id=plain_level)
def test_any_plain_ids_give_topics_that_split_back_into_the_same_ids(
    port_id: str, lane_id: str
) -> None:
    topics = Topics(DEFAULT_PREFIX, port_id, lane_id)
    for topic in (topics.crossing, topics.availability, topics.status):
        validate_topic_name(topic)
        assert topic.split("/")[2:4] == [port_id, lane_id]
