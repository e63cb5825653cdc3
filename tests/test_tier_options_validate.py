"""A tier's mover settings (options, storage class, mover, URL scheme) are checked when the
policy file is loaded: located, offline, before any store is opened."""

from __future__ import annotations

import pytest

from tests.conftest import CliResult, Sandbox

POLICY = """\
version: 1
tiers:
  hot: ./hot
  bad:
{tier}
datasets:
  logs: {{prefix: logs/, home: hot}}
"""


@pytest.mark.parametrize(
    ("tier", "where", "message", "hint"),
    [
        (
            "    url: ./cold\n    options: {read_bak: true}",
            "6:15",
            "tier 'bad': unknown option 'read_bak'",
            "did you mean 'read_back'?",
        ),
        (
            "    url: ./cold\n    options:\n      read_back: sometimes",
            "7:18",
            "tier 'bad': option 'read_back' must be true or false",
            "got 'sometimes'; write read_back: true or false",
        ),
        (
            "    url: s3://bucket/data\n    options:\n      region: eu-west-1\n      max_connections: lots",
            "8:24",
            "tier 'bad': option 'max_connections' must be a positive whole number",
            "got 'lots'",
        ),
        (
            "    url: s3://bucket/data\n    storage_class: glacier",
            "6:20",
            "tier 'bad': S3 has no storage class 'glacier'",
            "use one of: DEEP_ARCHIVE,",
        ),
        (
            "    url: gs://bucket/data\n    mover: rclone\n    storage_class: COLDLIN",
            "7:20",
            "tier 'bad': GCS has no storage class 'COLDLIN'",
            "use one of: ARCHIVE, COLDLINE,",
        ),
        (
            "    url: webhdfs://namenode:9870/data\n    options: {token: abc, user: bob}",
            "6:14",
            "tier 'bad': a delegation token already names its user",
            "give either token, or user / kerberos, not both",
        ),
        (
            "    url: s3://bucket/data\n    mover: rclon",
            "6:12",
            "tier 'bad': unknown mover 'rclon'",
            "use one of: auto, rclone",
        ),
        (
            "    url: ftp://host/data",
            "5:10",
            "tier 'bad': no mover for URL scheme 'ftp'",
            "supported schemes:",
        ),
    ],
)
def test_validate_locates_what_opening_the_tier_would_reject(
    cli, sandbox: Sandbox, tier: str, where: str, message: str, hint: str
) -> None:
    path = sandbox.write_config(POLICY.format(tier=tier))
    result = cli("-c", path, "validate")
    assert result.code == 1, result.out
    assert f"{path}:{where}: {message}" in result.out
    assert not hint or f"hint: {hint}" in result.out
    assert "Traceback" not in result.out + result.err


def test_plan_refuses_a_bad_tier_option_before_touching_a_store(cli, sandbox: Sandbox) -> None:
    path = sandbox.write_config(POLICY.format(tier="    url: ./cold\n    options: {read_back: perhaps}"))
    result: CliResult = cli("-c", path, "plan")
    assert result.code == 1
    assert f"error: {path}:6:26: tier 'bad': option 'read_back' must be true or false" in result.err
    assert "Traceback" not in result.err


def test_validation_is_offline_and_leaves_unset_variables_to_run_time(
    cli, sandbox: Sandbox, monkeypatch
) -> None:
    monkeypatch.delenv("TIERCTL_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("TIERCTL_TEST_CONNECTIONS", "-3")
    tier = (
        "    url: s3://bucket/data\n    storage_class: GLACIER\n    options:\n"
        "      endpoint_url: http://127.0.0.1:9\n"  # nothing listens: a connection would fail
        "      key: ${TIERCTL_TEST_UNSET_KEY}\n      part_size: ${TIERCTL_TEST_UNSET_KEY}\n"
    )
    path = sandbox.write_config(POLICY.format(tier=tier))
    result = cli("-c", path, "validate")
    assert result.code == 0, result.out + result.err
    # a variable that is set is checked as its value
    path = sandbox.write_config(
        POLICY.format(tier=tier + "      max_connections: ${TIERCTL_TEST_CONNECTIONS}\n")
    )
    result = cli("-c", path, "validate")
    assert result.code == 1
    assert f"{path}:11:24: tier 'bad': option 'max_connections' must be a positive whole number" in result.out
