"""Object-store warehouses (S3 and S3-compatible servers): opening a root URI, conditional creates, safe printing.

A warehouse root may be `s3://bucket/prefix`. Endpoint, region and credentials come from the
environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ... as the
AWS SDKs read them) or from the URI itself as pyarrow understands it: query parameters
`endpoint_override`, `scheme`, `region` (e.g. `s3://bucket/wh?endpoint_override=127.0.0.1:9000&scheme=http`)
and `s3://KEY:SECRET@bucket/...` user info. Data goes through pyarrow's S3 filesystem; the one
operation pyarrow lacks, an atomic create-if-absent for plant locks, is a conditional PUT
(`If-None-Match: *`) through boto3. Nothing here prints a credential: `redact_uri` and `scrub` are
what every message about a warehouse URI goes through. The tests run against moto's S3 emulation
(served over HTTP on loopback), not against AWS or another S3-compatible server.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.errors import WarehouseError

_MASK = "***"
#: Query parameters whose values are secrets, whatever the scheme.
_SECRET_PARAM = re.compile(r"secret|token|password|passwd|credential|signature|access_key|key_id", re.IGNORECASE)
#: Answers meaning "an object with that name already exists (or is being created right now)".
_TAKEN = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of an object-store root URI and the root path inside it."""
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise WarehouseError(f"warehouse {redact_uri(uri)} cannot be opened: {scrub(str(exc), uri)}") from None
    return filesystem, root.rstrip("/")


def redact_uri(uri: str) -> str:
    """The URI as it may be printed: user info and secret query values replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if not parts.scheme or parts.scheme == "file" or "://" not in uri:
        return uri  # a local path holds no credentials
    netloc = parts.netloc
    if "@" in netloc:
        netloc = _MASK + "@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{key}={_MASK if _SECRET_PARAM.search(key) else urllib.parse.quote(value, safe=':/')}"
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, uri: str) -> str:
    """`text` with the URI redacted and every secret it holds replaced by ***."""
    text = text.replace(uri, redact_uri(uri))
    for secret in sorted(_secrets(uri), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def _secrets(uri: str) -> set[str]:
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return set()
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        for piece in userinfo.split(":"):
            found |= {piece, urllib.parse.unquote(piece)}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(key):
            found |= {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    return {s for s in found if len(s) >= 3}  # never mask tiny strings all over a message


# ------------------------------------------------------------------------------------ conditional create


def create_if_absent(uri: str, filesystem: pafs.FileSystem, path: str, payload: bytes) -> bool:
    """Create object `path` holding `payload` if no object has that name: True if this call created it.

    One conditional PUT (`If-None-Match: *`): S3 creates the object only if the key does not exist
    and answers 412 PreconditionFailed otherwise (409 ConditionalRequestConflict while another
    conditional write of the key is in flight): atomic, with no read-then-write race. A server that
    silently ignores the condition would make locks worthless, so each bucket is probed once first.
    """
    if not isinstance(filesystem, pafs.S3FileSystem):
        raise WarehouseError(
            f"warehouse {redact_uri(uri)}: plant locks need an atomic create-if-absent, "
            f"implemented for local folders and s3:// only (not {filesystem.type_name})"
        )
    bucket, _, key = path.partition("/")
    client = _client(uri, filesystem.region)
    _check_conditional_writes(uri, client, bucket, key.rsplit("/", 1)[0])
    return _put_if_absent(uri, client, bucket, key, payload)


def _put_if_absent(uri: str, client: Any, bucket: str, key: str, payload: bytes) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.put_object(Bucket=bucket, Key=key, Body=payload, IfNoneMatch="*")
        return True
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if error.get("Code") in _TAKEN or status in _TAKEN:
            return False
        raise WarehouseError(
            f"warehouse {redact_uri(uri)}: cannot create s3://{bucket}/{key}: "
            f"{error.get('Code', status)} {scrub(str(error.get('Message', '')), uri)}".rstrip()
        ) from None
    except BotoCoreError as exc:
        raise WarehouseError(f"warehouse {redact_uri(uri)}: cannot create s3://{bucket}/{key}: "
                             f"{scrub(str(exc), uri)}") from None


@functools.cache
def _check_conditional_writes(uri: str, client: Any, bucket: str, prefix: str) -> None:
    """Refuse a store that accepts a second `If-None-Match: *` PUT of one key (it ignores the condition)."""
    probe = f"{prefix}/.conditional-write-probe-{uuid.uuid4().hex}"
    try:
        if not _put_if_absent(uri, client, bucket, probe, b"1"):
            raise WarehouseError(f"warehouse {redact_uri(uri)}: conditional-write probe key already exists")
        if _put_if_absent(uri, client, bucket, probe, b"2"):
            raise WarehouseError(
                f"warehouse {redact_uri(uri)}: the object store ignores If-None-Match on PUT, so plant "
                "locks cannot be exclusive; use a store with conditional writes (AWS S3, MinIO, moto 5.2)"
            )
    finally:
        try:
            client.delete_object(Bucket=bucket, Key=probe)
        except Exception:  # noqa: BLE001 - best effort; the probe key is harmless
            pass


@functools.cache
def _client(uri: str, region: str | None) -> Any:
    """A boto3 S3 client configured like pyarrow's filesystem for the same URI (endpoint, region, keys)."""
    import boto3  # only object-store warehouses need it

    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    options: dict[str, Any] = {}
    endpoint = query.get("endpoint_override")
    if endpoint:
        options["endpoint_url"] = endpoint if "://" in endpoint else f"{query.get('scheme', 'https')}://{endpoint}"
    if query.get("region") or region:
        options["region_name"] = query.get("region") or region
    if "@" in parts.netloc:
        key_id, _, secret = parts.netloc.rsplit("@", 1)[0].partition(":")
        options["aws_access_key_id"] = urllib.parse.unquote(key_id)
        options["aws_secret_access_key"] = urllib.parse.unquote(secret)
    # with no endpoint_override, boto3 reads AWS_ENDPOINT_URL(_S3) itself, as pyarrow does
    return boto3.session.Session().client("s3", **options)
