"""The server-image bench's pure parts: the Debian sources it builds from, the Dockerfile's rebase.

The build itself (debootstrap, buildah, minutes) runs only as ``bench/server_image.py``.
"""

from __future__ import annotations

import pytest

from bench.server_image import (
    BASE_IMAGE,
    DOCKERFILE,
    UPSTREAM_BASE,
    AptSource,
    ImageBuildError,
    deb822,
    debian_sources,
    debootstrap_mirror,
    manifest_layer_bytes,
    off_pins,
    parse_apt_sources,
    parse_size,
    pem_blocks,
    rebase_dockerfile,
)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""
NODESOURCE = """\
Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
"""
ONE_LINE = """\
# a comment
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
"""


def test_deb822_entries_are_read_without_source_stanzas_or_comments() -> None:
    assert parse_apt_sources(DEB822) == [
        AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), ("main",)),
        AptSource("http://deb.debian.org/debian-security", ("bookworm-security",), ("main",)),
    ]


def test_one_line_entries_are_read_with_their_options_skipped() -> None:
    assert parse_apt_sources(ONE_LINE) == [
        AptSource("http://mirror.example/debian", ("bookworm",), ("main", "contrib")),
        AptSource("https://packages.cloud.google.com/apt", ("cloud-sdk-bookworm",), ("main",)),
    ]


def test_only_debians_own_bookworm_suites_reach_the_image() -> None:
    entries = parse_apt_sources(DEB822) + parse_apt_sources(NODESOURCE + "\n")
    entries += parse_apt_sources(ONE_LINE)
    kept = debian_sources(entries)
    assert [e.uri for e in kept] == [
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
        "http://mirror.example/debian",
    ]
    assert debootstrap_mirror(entries) == "http://deb.debian.org/debian"
    text = deb822(kept[:2])
    assert "Suites: bookworm bookworm-updates\n" in text
    assert "Suites: bookworm-security\n" in text
    assert "nodesource" not in text


def test_a_machine_without_a_bookworm_mirror_is_refused_by_name() -> None:
    with pytest.raises(ImageBuildError, match="bookworm main"):
        debootstrap_mirror(parse_apt_sources(NODESOURCE))


def test_the_committed_dockerfile_is_rebased_on_both_from_lines_and_nothing_else() -> None:
    original = DOCKERFILE.read_text()
    rebased = rebase_dockerfile(original, UPSTREAM_BASE, BASE_IMAGE)
    assert rebased.count(f"FROM {BASE_IMAGE}") == 2
    assert f"FROM {BASE_IMAGE} AS build\n" in rebased
    assert UPSTREAM_BASE not in rebased
    assert rebased.replace(BASE_IMAGE, UPSTREAM_BASE) == original


def test_a_moved_base_or_a_second_registry_image_is_refused() -> None:
    with pytest.raises(ImageBuildError, match="no FROM"):
        rebase_dockerfile("FROM docker.io/library/python:3.12-slim\n", UPSTREAM_BASE, BASE_IMAGE)
    with pytest.raises(ImageBuildError, match="alpine"):
        rebase_dockerfile(
            f"FROM {UPSTREAM_BASE} AS build\nFROM docker.io/library/alpine:3\n",
            UPSTREAM_BASE,
            BASE_IMAGE,
        )


def test_certificates_compare_by_their_body_whatever_the_line_breaks() -> None:
    one = "-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n"
    same = "x\n-----BEGIN CERTIFICATE-----\r\nQUJDREVG\r\n-----END CERTIFICATE-----"
    other = "-----BEGIN CERTIFICATE-----\nR0hJ\n-----END CERTIFICATE-----\n"
    assert pem_blocks(one) == pem_blocks(same) == {"QUJDREVG"}
    assert not pem_blocks(one) & pem_blocks(other)
    assert pem_blocks(one + other) == {"QUJDREVG", "R0hJ"}


def test_du_bytes_are_the_first_field() -> None:
    assert parse_size("156012345\t/opt/venv") == 156012345


def test_an_images_size_is_the_sum_of_its_manifests_layers() -> None:
    manifest = (
        '{"schemaVersion":2,"config":{"digest":"sha256:c","size":435},'
        '"layers":[{"digest":"sha256:a","size":128830976},{"digest":"sha256:b","size":1024}]}'
    )
    assert manifest_layer_bytes(manifest) == 128832000


def test_the_venv_is_checked_against_constraints_pins_less_its_bootstrap_copies() -> None:
    constraints = "# comment\nFastAPI==0.116.0\nuvicorn==0.35.0  # pinned\n"
    installed = "fastapi==0.116.0\npip==23.0.1\nsetuptools==66.1.1\nroadsign-fleet==0.1.0\n"
    assert off_pins(installed, constraints) == {}
    assert off_pins(installed + "uvicorn==0.36.0\nh11==0.16.0\n", constraints) == {
        "uvicorn": "0.36.0",
        "h11": "0.16.0",
    }
