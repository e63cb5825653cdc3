"""Give an existing object tags and user metadata through its store's own API (xattrs,
boto3, the GCS JSON API), never through tierctl, for the listing-metadata contract case."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tierctl.movers.base import Mover, Unsupported
from tierctl.movers.gcs import GCSMover
from tierctl.movers.local import LocalMover
from tierctl.movers.objmeta import split_bucket_url
from tierctl.movers.options import StoreOptions
from tierctl.movers.rclone import RcloneMover
from tierctl.movers.s3 import S3Mover


def arrange_metadata(
    mover: Mover, key: str, metadata: Mapping[str, str], tags: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Set ``metadata`` and (where the store has tags) ``tags`` on ``key``; returns what the
    object now holds: (user metadata, tags). :class:`Unsupported` for other stores."""
    inner = getattr(mover, "inner", mover)
    if isinstance(inner, LocalMover):
        path = os.path.join(inner.root, *key.split("/"))
        for name, value in metadata.items():
            os.setxattr(path, f"user.{name}", value.encode())
        return dict(metadata), {}  # local files have no tags
    if isinstance(inner, S3Mover):
        _s3(inner.options, inner.bucket, inner.prefix + key, metadata, tags)
        return dict(metadata), dict(tags)
    if isinstance(inner, GCSMover):
        _gcs(inner.options, inner.bucket, inner.prefix + key, metadata)
        return dict(metadata), {}  # GCS has no object tags
    if isinstance(inner, RcloneMover):
        if inner.kind == "s3":
            bucket, prefix = split_bucket_url(inner.url, ("s3", "s3a"))
            _s3(inner.options, bucket, prefix + key, metadata, tags)
            return dict(metadata), dict(tags)
        bucket, prefix = split_bucket_url(inner.url, ("gs", "gcs"))
        _gcs(inner.options, bucket, prefix + key, metadata)
        return dict(metadata), {}
    raise Unsupported(f"{mover.url}: no way to arrange metadata in the tests")


def _s3(
    options: StoreOptions, bucket: str, name: str, metadata: Mapping[str, str], tags: Mapping[str, str]
) -> None:
    import boto3

    client: Any = boto3.client(
        "s3",
        endpoint_url=options.endpoint_url,
        aws_access_key_id=options.reveal("key"),
        aws_secret_access_key=options.reveal("secret"),
        region_name=options.region,
    )
    if metadata:
        kept = client.head_object(Bucket=bucket, Key=name)["Metadata"]  # the content mtime stays
        client.copy_object(
            Bucket=bucket,
            Key=name,
            CopySource={"Bucket": bucket, "Key": name},
            MetadataDirective="REPLACE",
            Metadata={**kept, **metadata},
        )
    if tags:
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        client.put_object_tagging(Bucket=bucket, Key=name, Tagging={"TagSet": tag_set})


def _gcs(options: StoreOptions, bucket: str, name: str, metadata: Mapping[str, str]) -> None:
    import requests

    # GCS merges patched metadata keys; the emulator replaces the whole mapping: send it all,
    # so the content mtime stays.
    url = f"{options.endpoint_url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
    current = requests.get(url, timeout=30)
    current.raise_for_status()
    merged = {**(current.json().get("metadata") or {}), **metadata}
    requests.patch(url, json={"metadata": merged}, timeout=30).raise_for_status()
