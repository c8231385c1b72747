"""Parsing for the registry copy of ``export --push-to`` (the copy itself runs against a
real registry in tests/integration/test_export_knative.py)."""

from __future__ import annotations

import pytest

from allinone.export.registry import RegistryError, _base, parse_destination, parse_reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_reference_by_digest() -> None:
    ref = parse_reference(f"127.0.0.1:5000/allinone/add@{DIGEST}")
    assert (ref.host, ref.repo, ref.digest) == ("127.0.0.1:5000", "allinone/add", DIGEST)
    assert str(ref) == f"127.0.0.1:5000/allinone/add@{DIGEST}"


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/allinone/add:latest", "add@" + DIGEST,
                                 "h/r@sha256:short"])
def test_reference_without_digest_is_refused(ref: str) -> None:
    with pytest.raises(RegistryError, match="not an image reference by digest"):
        parse_reference(ref)


@pytest.mark.parametrize(("dest", "want"), [
    ("registry.example.com/team", ("registry.example.com", "team")),
    ("reg.example:5000/a/b-c", ("reg.example:5000", "a/b-c")),
    ("127.0.0.1:5001/exported", ("127.0.0.1:5001", "exported")),
])
def test_destination(dest: str, want: tuple[str, str]) -> None:
    assert parse_destination(dest) == want


@pytest.mark.parametrize("dest", ["registry.example.com", "reg/Team", "reg/", "/team",
                                  "reg/team/", "https://reg/team"])
def test_bad_destination_says_the_form(dest: str) -> None:
    with pytest.raises(RegistryError, match=r"HOST\[:PORT\]/PREFIX"):
        parse_destination(dest)


@pytest.mark.parametrize(("host", "scheme"), [("127.0.0.1:5000", "http"),
                                              ("localhost:5000", "http"),
                                              ("[::1]:5000", "http"),
                                              ("registry.example.com", "https"),
                                              ("10.0.0.1:5000", "https")])
def test_plain_http_only_on_loopback(host: str, scheme: str) -> None:
    assert _base(host) == f"{scheme}://{host}/v2/"
