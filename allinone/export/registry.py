"""Copy an image between registries by digest (``allinone function export --push-to``).

The copy speaks the registry HTTP API v2 directly: the manifest's bytes are copied as they
are, so the image keeps its digest (``sha256`` of those bytes) and the exported Service
can reference ``HOST/PREFIX/NAME@sha256:...``. Blobs already at the destination are
skipped; on the same registry they are mounted instead of copied. Index manifests
(multi-platform) are copied with every manifest they list.

Invariants: nothing is pushed under a digest it does not have (every manifest is checked
against its digest before and after the PUT); a registry that asks for credentials gets
a clear error naming a tool that can log in, rather than a half-copied image. Plain HTTP
is used for loopback registries only, HTTPS for everything else.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEX_TYPES = MANIFEST_TYPES[0], MANIFEST_TYPES[2]
_REF_RE = re.compile(r"^(?P<host>[^/]+)/(?P<repo>[a-z0-9._/-]+)@(?P<digest>sha256:[0-9a-f]{64})$")
_DEST_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+(:\d+)?|\[[0-9a-fA-F:]+\](:\d+)?)"
                      r"/(?P<prefix>[a-z0-9]+([._/-][a-z0-9]+)*)$")
TIMEOUT = 60.0


class RegistryError(RuntimeError):
    """The copy failed; the message says where and what to do."""


@dataclass(frozen=True)
class Reference:
    host: str
    repo: str
    digest: str

    def __str__(self) -> str:
        return f"{self.host}/{self.repo}@{self.digest}"


def parse_reference(ref: str) -> Reference:
    m = _REF_RE.match(ref)
    if not m:
        raise RegistryError(f"{ref!r} is not an image reference by digest (HOST/REPO@sha256:...)")
    return Reference(m["host"], m["repo"], m["digest"])


def parse_destination(dest: str) -> tuple[str, str]:
    """``HOST[:PORT]/PREFIX`` -> (host, prefix)."""
    m = _DEST_RE.match(dest)
    if not m:
        raise RegistryError(
            f"--push-to {dest!r}: give HOST[:PORT]/PREFIX, e.g. registry.example.com/team "
            "(lower-case path)")
    return m["host"], m["prefix"]


def _base(host: str) -> str:
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    scheme = "http" if hostname in {"127.0.0.1", "localhost", "[::1]"} else "https"
    return f"{scheme}://{host}/v2/"


class _Sized:
    """A stream with a known length: requests then sends Content-Length and streams the
    body, where a bare stream would go out chunked (which registries do not all take)."""

    def __init__(self, raw: Any, length: int) -> None:
        self.raw, self.length = raw, length

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        return data


class _Copier:
    def __init__(self, src: Reference, host: str, repo: str, mount: bool) -> None:
        self.src, self.host, self.repo = src, host, repo
        self.mount = mount and host == src.host
        self.http = requests.Session()
        self.src_base = _base(src.host) + src.repo
        self.dst_base = _base(host) + repo

    def _check(self, resp: requests.Response, what: str, ok: tuple[int, ...]) -> None:
        if resp.status_code in (401, 403):
            raise RegistryError(
                f"{self.host} refused {what} (HTTP {resp.status_code}): it wants credentials, "
                "which this copy does not handle; copy with a tool that logs in, e.g. "
                f"skopeo copy docker://{self.src} docker://{self.host}/{self.repo}, then "
                "export without --push-to and edit the image")
        if resp.status_code not in ok:
            raise RegistryError(f"{what}: HTTP {resp.status_code} {resp.text[:200]}")

    def blob(self, digest: str) -> None:
        head = self.http.head(f"{self.dst_base}/blobs/{digest}", timeout=TIMEOUT)
        if head.status_code == 200:
            return
        uploads = f"{self.dst_base}/blobs/uploads/"
        if self.mount:
            resp = self.http.post(uploads, params={"mount": digest, "from": self.src.repo},
                                  timeout=TIMEOUT)
            if resp.status_code == 201:
                return
        start = self.http.post(uploads, timeout=TIMEOUT)
        self._check(start, f"starting the upload of {digest}", (202,))
        location = urljoin(uploads, start.headers["Location"])
        with self.http.get(f"{self.src_base}/blobs/{digest}", stream=True,
                           timeout=TIMEOUT) as src:
            self._check(src, f"reading blob {digest} from {self.src.host}", (200,))
            sep = "&" if "?" in location else "?"
            put = self.http.put(
                f"{location}{sep}digest={digest}",
                data=_Sized(src.raw, int(src.headers["Content-Length"])),
                headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
        self._check(put, f"uploading blob {digest}", (201,))

    def manifest(self, digest: str, tags: tuple[str, ...] = ()) -> None:
        resp = self.http.get(f"{self.src_base}/manifests/{digest}",
                             headers={"Accept": ", ".join(MANIFEST_TYPES)}, timeout=TIMEOUT)
        self._check(resp, f"reading manifest {digest} from {self.src.host}", (200,))
        body = resp.content
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError(f"{self.src.host} served a manifest that is not {digest}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0]
        doc = json.loads(body)
        media_type = doc.get("mediaType") or media_type
        if media_type in _INDEX_TYPES:
            for child in doc.get("manifests", []):
                self.manifest(child["digest"])
        else:
            for blob in [doc["config"], *doc.get("layers", [])]:
                self.blob(blob["digest"])
        for ref in (digest, *tags):
            put = self.http.put(f"{self.dst_base}/manifests/{ref}", data=body,
                                headers={"Content-Type": media_type}, timeout=TIMEOUT)
            self._check(put, f"pushing manifest {ref}", (201,))
            got = put.headers.get("Docker-Content-Digest", digest)
            if got != digest:
                raise RegistryError(f"{self.host} stored the manifest as {got}, not {digest}")


def copy_image(source: str, dest: str, name: str, *, tag: str = "latest",
               mount: bool = True) -> str:
    """Copy ``source`` (HOST/REPO@sha256:...) to ``dest``/``name``; the new reference.

    The digest is kept: ``copy_image("127.0.0.1:5000/allinone/add@sha256:ab..",
    "reg.example/team", "add")`` -> ``"reg.example/team/add@sha256:ab.."``.
    """
    src = parse_reference(source)
    host, prefix = parse_destination(dest)
    repo = f"{prefix}/{name}"
    try:
        _Copier(src, host, repo, mount).manifest(src.digest, (tag,))
    except requests.RequestException as exc:
        raise RegistryError(f"copying {src} to {host}/{repo}: {exc}") from exc
    return f"{host}/{repo}@{src.digest}"
