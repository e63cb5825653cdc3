"""Registry wiring, per-tier options, and credentials that never leak."""

from __future__ import annotations

import pytest

from tierctl.errors import ConfigError, MoverError
from tierctl.movers.gcs import GCSMover
from tierctl.movers.options import Secret, StoreOptions
from tierctl.movers.rclone import RcloneMover, rclone_binary
from tierctl.movers.registry import TierTarget, open_mover
from tierctl.movers.s3 import S3Mover

from ..servers.gcs_server import GcsEmulator
from ..servers.moto_server import ACCESS_KEY, REGION, MotoS3
from .conftest import S3_BUCKET, fresh_prefix

LEAKY = "s3cr3t-VALUE-that-must-never-show"


def test_schemes_and_named_movers(moto_s3: MotoS3, gcs_emulator: GcsEmulator) -> None:
    s3 = open_mover(TierTarget("a", "s3://bkt/p", options={"endpoint_url": moto_s3.endpoint_url}))
    gs_options = {"endpoint_url": gcs_emulator.endpoint_url, "token": "anon", "project": "p"}
    gs = open_mover(TierTarget("b", "gs://bkt/p", options=gs_options))
    rc = open_mover(TierTarget("c", "s3://bkt/p", mover="rclone"))
    assert (type(s3), type(gs), type(rc)) == (S3Mover, GCSMover, RcloneMover)
    assert rc.binary == rclone_binary() and rc.binary.startswith("/")


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        S3Mover("s3://bkt/p", endpoint="http://x")


def test_env_references_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERCTL_TEST_SECRET", LEAKY)
    opts = StoreOptions.parse({"secret": "${TIERCTL_TEST_SECRET}", "region": "eu-$${x}"}, url="s3://b")
    assert opts.reveal("secret") == LEAKY
    assert opts.region == "eu-${x}"
    with pytest.raises(ConfigError, match="TIERCTL_UNSET_VAR") as info:
        StoreOptions.parse({"key": "${TIERCTL_UNSET_VAR}"}, url="s3://b")
    assert LEAKY not in str(info.value)


@pytest.mark.parametrize("kind", ["s3", "rclone-s3", "gcs"])
def test_secrets_never_reach_repr_or_errors(
    kind: str,
    moto_s3: MotoS3,
    gcs_emulator: GcsEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TIERCTL_TEST_SECRET", LEAKY)
    if kind == "gcs":
        with pytest.raises(MoverError) as info:
            GCSMover(
                "gs://no-such-bucket/p", endpoint_url="http://127.0.0.1:9", token="${TIERCTL_TEST_SECRET}"
            )
        assert LEAKY not in f"{info.value} {info.value.hint} {info.value!r}"
        mover = GCSMover(
            "gs://no-such-bucket/p", endpoint_url=gcs_emulator.endpoint_url, token="anon", project="p"
        )
    else:
        options = {
            "endpoint_url": moto_s3.endpoint_url,
            "region": REGION,
            "key": ACCESS_KEY,
            "secret": "${TIERCTL_TEST_SECRET}",
        }
        cls = S3Mover if kind == "s3" else RcloneMover
        mover = cls(f"s3://{S3_BUCKET}/{fresh_prefix()}", **options)
    texts = [repr(mover), str(mover), repr(mover.options), repr(Secret(LEAKY))]
    for action in (
        lambda: mover.stat("missing"),
        lambda: b"".join(mover.read_chunks("missing")),
        lambda: mover.delete("missing"),
        lambda: mover.write("bad\x00key", [b""], size=0, mtime=0.0),
    ):
        with pytest.raises(MoverError) as info:
            action()
        texts += [str(info.value), info.value.hint, repr(info.value)]
    if kind != "gcs":  # a store refusing the request: wrong bucket
        broken = type(mover)(
            "s3://no-such-bucket-tierctl/p",
            endpoint_url=moto_s3.endpoint_url,
            key=ACCESS_KEY,
            secret=LEAKY,
            region=REGION,
        )
        with pytest.raises(MoverError) as info:
            broken.write("k", [b"x"], size=1, mtime=0.0)
        texts += [str(info.value), info.value.hint]
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    assert all(LEAKY not in text for text in texts)
