"""Benchmark: the server image (docker/server.Dockerfile) built without a Docker daemon; its size.

The Dockerfile's base, ``docker.io/library/python:3.11.14-slim-bookworm``, cannot be pulled here:
this machine reaches PyPI, the Debian mirror and npm, not Docker Hub. So the base is made from
the Debian mirror apt already uses (``/etc/apt/sources.list.d/*.sources`` or
``/etc/apt/sources.list``), and the Dockerfile itself is built on it unchanged but for its
``FROM`` lines:

1. ``debootstrap --variant=minbase bookworm`` from that mirror (the tarball is kept in
   ``.cache/server-image/`` and reused; ``--fresh-debootstrap`` makes it again);
2. a base image: ``buildah from scratch``, the rootfs added, then in it (``buildah run``) the
   bookworm, bookworm-updates and bookworm-security suites, ``apt-get upgrade``, Debian's
   ``python3.11``, ``python3.11-venv`` and ``python-is-python3`` (``python`` as the Dockerfile
   calls it), ``ca-certificates``, ``netbase`` and ``tzdata`` as the python slim image has them,
   no recommends, and no documentation, manual pages or translations (``dpkg`` path excludes, as
   Debian's ``-slim`` images are made); committed as ``localhost/roadsign-fleet/debian-python``;
3. ``buildah bud --isolation chroot --storage-driver vfs`` of docker/server.Dockerfile with both
   ``FROM`` lines on that base: its build stage (a venv, ``pip install -c constraints.txt
   './[server]'`` from PyPI) and its runtime stage (the fleet user 10001, the broker folder, the
   venv copied, ``USER``, ``ENTRYPOINT``, ``CMD``, labels) as committed;
4. in the result, as the image's configured user (``buildah run``): ``id -u``, the image's own
   entrypoint and command (``roadsign-fleet --help``), and ``roadsign-fleet migrate`` against a
   private PostgreSQL (``tests.postgres``) on 127.0.0.1 (chroot isolation shares this machine's
   network), which must bring the empty database to the migrations' head;
5. ``buildah push`` to an ``oci-archive:`` tarball, its layers gzip-compressed as a registry
   stores them; the sizes: buildah's image size (uncompressed layers), the archive's bytes, the
   venv's and the base's.

The differences from the real base, which the results name: Debian's Python 3.11.2 in
``/usr/bin`` instead of python.org's 3.11.14 built into ``/usr/local``; Debian's pip 23.0.1
(``ensurepip``) in the venv instead of the image's newer one. Both pass the same
``requires-python`` and install the same pinned wheels.

The egress proxy's certificate authority reaches pip during the build only: Debian's pip trusts
the system bundle, so this machine's bundle (Debian's plus the proxy's CA) is bind-mounted over
the image's own ``/etc/ssl/certs/ca-certificates.crt`` in each ``RUN`` (``--volume``, over a file
that exists, so no mount point is left behind), and the bench checks the image's bundle holds
none of this machine's own CAs.

Needs root and, once: ``apt-get install -y --no-install-recommends buildah debootstrap``
(Debian 12: buildah 1.28.2, debootstrap 1.0.128). Several minutes (the vfs driver copies every
layer), about 0.7 GB under ``.cache/server-image/``; not in ``make test``.

    .venv/bin/python bench/server_image.py --output bench/results/server_image.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic.script import ScriptDirectory
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_server.migrate import alembic_config  # noqa: E402
from fleet_server.settings import DatabaseSettings  # noqa: E402
from tests.postgres import Postgres  # noqa: E402 - the tests' private PostgreSQL, as bench/ingest.py

CACHE = ROOT / ".cache" / "server-image"
DOCKERFILE = ROOT / "docker" / "server.Dockerfile"
UPSTREAM_BASE = "docker.io/library/python:3.11.14-slim-bookworm"
BASE_IMAGE = "localhost/roadsign-fleet/debian-python:3.11-bookworm"
SERVER_IMAGE = "localhost/roadsign-fleet/server:bench"
SUITE = "bookworm"
BASE_PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python-is-python3",
    "ca-certificates",
    "netbase",
    "tzdata",
)
# What Debian's -slim images leave out (debuerreotype's slimify list), copyright files kept.
SLIM_DPKG_CFG = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
SLIM_PRUNE = (
    "find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete; "
    "find /usr/share/doc -mindepth 1 -type d -empty -delete; "
    "rm -rf /usr/share/info/* /usr/share/linda/* /usr/share/lintian/overrides/* "
    "/usr/share/locale/* /usr/share/man/*"
)
FROM_LINE = re.compile(r"^(FROM\s+)(\S+)(.*)$", re.MULTILINE)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
HELP_WORDS = ("serve", "ingest", "migrate")


class ImageBuildError(RuntimeError):
    """A step of the image build failed; the message says which and why."""


@dataclass(frozen=True)
class AptSource:
    """One Debian repository entry: where, which suites, which components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_apt_sources(text: str) -> list[AptSource]:
    """The ``deb`` entries of a sources file, deb822 (``.sources``) or one-line (``.list``)."""
    entries = []
    if re.search(r"^Types:", text, re.MULTILINE):
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and "uris" in fields:
                for uri in fields["uris"].split():
                    entries.append(
                        AptSource(
                            uri.rstrip("/"),
                            tuple(fields.get("suites", "").split()),
                            tuple(fields.get("components", "").split()),
                        )
                    )
        return entries
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        if len(words) >= 3:
            entries.append(AptSource(words[0].rstrip("/"), (words[1],), tuple(words[2:])))
    return entries


def debian_sources(entries: list[AptSource], suite: str = SUITE) -> list[AptSource]:
    """The entries of Debian's own `suite` family (``suite``, ``-updates``, ``-security``)."""
    family = {suite, f"{suite}-updates", f"{suite}-security"}
    return [
        AptSource(e.uri, tuple(s for s in e.suites if s in family), e.components)
        for e in entries
        if any(s in family for s in e.suites) and "main" in e.components
    ]


def debootstrap_mirror(entries: list[AptSource], suite: str = SUITE) -> str:
    """The mirror that carries `suite` itself: what debootstrap installs from."""
    for entry in debian_sources(entries, suite):
        if suite in entry.suites:
            return entry.uri
    raise ImageBuildError(f"no apt source here carries Debian {suite} main")


def deb822(entries: list[AptSource]) -> str:
    """`entries` as a deb822 ``debian.sources`` file for the image, with Debian's keyring."""
    return "\n".join(
        f"Types: deb\nURIs: {e.uri}\nSuites: {' '.join(e.suites)}\n"
        f"Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        for e in entries
    )


def rebase_dockerfile(text: str, old: str, new: str) -> str:
    """The Dockerfile with every ``FROM old`` on `new`, and nothing else changed.

    Refuses a Dockerfile with no ``FROM old`` (the base moved: the bench must follow it) or with
    a ``FROM`` of another image, which could not be pulled here either.
    """
    bases = [m.group(2) for m in FROM_LINE.finditer(text)]
    if old not in bases:
        raise ImageBuildError(f"the Dockerfile has no FROM {old} (its bases: {bases})")
    others = sorted({b for b in bases if b != old})
    if others:
        raise ImageBuildError(f"the Dockerfile also builds FROM {others}: not reachable here")
    return FROM_LINE.sub(lambda m: f"{m.group(1)}{new}{m.group(3)}", text)


PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def pem_blocks(text: str) -> set[str]:
    """Each certificate in a PEM text, as its base64 body without whitespace."""
    return {"".join(m.group(1).split()) for m in PEM_BLOCK.finditer(text)}


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines (constraints.txt, ``pip list --format=freeze``) as a mapping."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, version = line.split("#", 1)[0].partition("==")
        if sep:
            found[canonicalize_name(name.strip())] = version.strip()
    return found


def off_pins(installed: str, constraints: str) -> dict[str, str]:
    """What `installed` holds at another version than `constraints`, or that it does not pin.

    pip and setuptools are the venv's own bootstrap copies and roadsign-fleet is this checkout.
    """
    pinned = pins(constraints)
    return {
        name: version
        for name, version in pins(installed).items()
        if name not in {"pip", "setuptools", "roadsign-fleet"} and pinned.get(name) != version
    }


def parse_size(text: str) -> int:
    """Bytes from a ``du -sb`` line (``"12345\\t/path"``)."""
    return int(text.split()[0])


def tool(name: str) -> str:
    """The absolute path of a program this bench needs, or why it cannot run."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise ImageBuildError(
            f"{name} is not installed: apt-get install -y --no-install-recommends "
            "buildah debootstrap"
        )
    return path


class Buildah:
    """buildah on its own vfs store under `root` (never the machine's own), chroot isolation."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.global_args = [
            tool("buildah"),
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            "vfs",
        ]

    def __call__(self, *args: str, capture: bool = True) -> str:
        """Run one buildah command; its stdout (or "" when streamed)."""
        env = dict(os.environ, BUILDAH_ISOLATION="chroot")
        try:
            done = subprocess.run(
                [*self.global_args, *args],
                check=True,
                text=True,
                env=env,
                stdout=subprocess.PIPE if capture else None,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            raise ImageBuildError(f"buildah {' '.join(args[:2])} failed: {e}") from e
        return done.stdout or ""

    def reset(self) -> None:
        """An empty store, so each run builds from nothing but the debootstrap tarball."""
        if (self.root / "storage").exists():
            # buildah first: it unmounts and forgets its containers before the files go.
            self("rm", "--all")
            self("rmi", "--all", "--force")
        for folder in ("storage", "run"):
            if (self.root / folder).exists():
                shutil.rmtree(self.root / folder)


def command_output(name: str, *args: str) -> str:
    """A tool's stdout, first line (versions)."""
    try:
        out = subprocess.run([tool(name), *args], check=True, text=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ImageBuildError(f"{name} {' '.join(args)} failed: {e}") from e
    return out.strip().splitlines()[0]


def host_only_cas() -> list[Path]:
    """The CA certificates this machine adds to Debian's (the egress proxy's)."""
    return sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))


def read_host_sources() -> list[AptSource]:
    """The apt entries this machine uses."""
    # /etc/apt/sources.list's own suffix is .list, as the folder's one-line files are.
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    entries = []
    for path in files:
        if path.suffix in (".list", ".sources") and path.is_file():
            entries += parse_apt_sources(path.read_text())
    return entries


def debootstrap(tarball: Path, mirror: str) -> float:
    """A minbase bookworm rootfs from `mirror`, packed as `tarball`; the seconds it took."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        rootfs = Path(work) / "rootfs"
        try:
            subprocess.run(
                [tool("debootstrap"), "--variant=minbase", SUITE, str(rootfs), mirror],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            subprocess.run(
                [tool("tar"), "--numeric-owner", "-C", str(rootfs), "-cf", f"{tarball}.part", "."],
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            raise ImageBuildError(f"debootstrap of {SUITE} from {mirror} failed: {e}") from e
    os.replace(str(tarball) + ".part", tarball)
    return time.monotonic() - started


def build_base(buildah: Buildah, tarball: Path, sources: list[AptSource]) -> None:
    """The local stand-in for python:3.11-slim-bookworm, committed as `BASE_IMAGE`."""
    files = CACHE / "base-files"
    files.mkdir(exist_ok=True)
    (files / "debian.sources").write_text(deb822(sources))
    (files / "slim").write_text(SLIM_DPKG_CFG)
    container = buildah("from", "--name", "rsf-base", "scratch").strip()
    buildah("add", container, str(tarball), "/")
    buildah("copy", container, str(files / "slim"), "/etc/dpkg/dpkg.cfg.d/slim")
    buildah("copy", container, str(files / "debian.sources"), "/etc/apt/sources.list.d/")
    script = (
        "set -eu; rm -f /etc/apt/sources.list; "
        f"{SLIM_PRUNE}; "
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
        "apt-get -qq -y upgrade; "
        f"apt-get -qq -y install --no-install-recommends {' '.join(BASE_PACKAGES)}; "
        "apt-get clean; rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log "
        "/var/cache/debconf/*-old"
    )
    buildah("run", container, "--", "sh", "-c", script, capture=False)
    # As python:3.11-slim sets them; the Dockerfile's ENV PATH=/opt/venv/bin:$PATH extends PATH.
    buildah(
        "config",
        "--env",
        f"PATH={BASE_PATH}",
        "--env",
        "LANG=C.UTF-8",
        "--cmd",
        "python3",
        container,
    )
    buildah("commit", "--rm", container, BASE_IMAGE)


def manifest_layer_bytes(manifest: str) -> int:
    """The bytes of an image's layers as its manifest lists them (uncompressed in local storage)."""
    layers: list[dict[str, Any]] = json.loads(manifest)["layers"]
    return sum(int(layer["size"]) for layer in layers)


def image_info(buildah: Buildah, image: str) -> dict[str, Any]:
    """The image's size (exact, and as `buildah images` prints it) and its OCI config."""
    listed = json.loads(buildah("images", "--json", image))
    inspected = json.loads(buildah("inspect", "--type", "image", image))
    return {
        "size": manifest_layer_bytes(inspected["Manifest"]),
        "buildah_images_size": listed[0]["size"],
        "layers": len(json.loads(inspected["Manifest"])["layers"]),
        "config": inspected["OCIv1"]["config"],
    }


def run_in(buildah: Buildah, image: str, argv: list[str], env: dict[str, str] | None = None) -> str:
    """`argv` in a container of `image`, as the image's user; its stdout."""
    container = buildah("from", "--pull-never", image).strip()
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    try:
        return buildah("run", *flags, container, "--", *argv)
    finally:
        buildah("rm", container)


def migrate_in(buildah: Buildah, image: str) -> tuple[str, str]:
    """`roadsign-fleet migrate` in the image against a private PostgreSQL: (reached, head).

    The chroot shares this machine's network, so the image's psycopg and the migrations in its
    wheel meet a real server on 127.0.0.1.
    """
    with Postgres() as database:
        url = database.url()
        run_in(
            buildah, image, ["roadsign-fleet", "migrate"], {"ROADSIGN_FLEET__DATABASE__URL": url}
        )
        with psycopg.connect(database.url(driver="postgresql")) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        head = ScriptDirectory.from_config(alembic_config(DatabaseSettings(url=url)))
    return (row[0] if row else ""), str(head.get_current_head())


def main(argv: list[str] | None = None) -> int:
    """Build both images, run the server's help in the result, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="results JSON to write")
    parser.add_argument(
        "--fresh-debootstrap", action="store_true", help="debootstrap again, not the cached tarball"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise ImageBuildError("buildah's chroot isolation and debootstrap need root")
    CACHE.mkdir(parents=True, exist_ok=True)
    versions = {
        "buildah": command_output("buildah", "--version"),
        "debootstrap": command_output("debootstrap", "--version"),
    }
    host_entries = read_host_sources()
    sources = debian_sources(host_entries)
    mirror = debootstrap_mirror(host_entries)
    seconds: dict[str, float | None] = {}
    tarball = CACHE / f"debootstrap-{SUITE}-minbase.tar"
    if args.fresh_debootstrap or not tarball.exists():
        seconds["debootstrap"] = round(debootstrap(tarball, mirror), 1)
    else:
        seconds["debootstrap"] = None
    buildah = Buildah(CACHE)
    buildah.reset()

    started = time.monotonic()
    build_base(buildah, tarball, sources)
    seconds["base_image"] = round(time.monotonic() - started, 1)

    dockerfile = CACHE / "server.Dockerfile"
    dockerfile.write_text(rebase_dockerfile(DOCKERFILE.read_text(), UPSTREAM_BASE, BASE_IMAGE))
    started = time.monotonic()
    buildah(
        "bud",
        "--isolation",
        "chroot",
        "--pull-never",
        "--layers=false",
        "--volume",
        f"{HOST_CA}:{HOST_CA}:ro",
        "-f",
        str(dockerfile),
        "-t",
        SERVER_IMAGE,
        str(ROOT),
        capture=False,
    )
    seconds["server_image"] = round(time.monotonic() - started, 1)

    server = image_info(buildah, SERVER_IMAGE)
    base = image_info(buildah, BASE_IMAGE)
    config = server["config"]
    default_command = [*config.get("Entrypoint", []), *config.get("Cmd", [])]
    help_text = run_in(buildah, SERVER_IMAGE, default_command)
    missing = [w for w in HELP_WORDS if w not in help_text]
    if missing:
        raise ImageBuildError(f"`{' '.join(default_command)}` does not list {missing}")
    probe = dict(
        line.split("=", 1)
        for line in run_in(
            buildah,
            SERVER_IMAGE,
            [
                "sh",
                "-c",
                'echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "venv=$(du -sb /opt/venv)"; '
                'echo "python=$(python --version)"; echo "debian=$(cat /etc/debian_version)"; '
                "echo \"pip=$(pip --version | cut -d' ' -f1-2)\"; "
                "echo \"cas=$(grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt)\"",
            ],
        ).splitlines()
    )
    if (probe["uid"], probe["gid"]) != ("10001", "10001"):
        raise ImageBuildError(f"the image runs as {probe['uid']}:{probe['gid']}, not 10001:10001")
    installed = run_in(buildah, SERVER_IMAGE, ["pip", "list", "--format=freeze"])
    unpinned = off_pins(installed, (ROOT / "constraints.txt").read_text())
    if unpinned:
        raise ImageBuildError(
            f"the image's venv holds versions constraints.txt does not: {unpinned}"
        )
    reached, head = migrate_in(buildah, SERVER_IMAGE)
    if reached != head:
        raise ImageBuildError(f"migrate in the image reached {reached!r}, not the head {head!r}")

    bundle = run_in(buildah, SERVER_IMAGE, ["cat", str(HOST_CA)])
    leaked = [p.name for p in host_only_cas() if pem_blocks(p.read_text()) & pem_blocks(bundle)]
    if leaked:
        raise ImageBuildError(f"this machine's own CAs {leaked} were left in the image")

    archive = CACHE / "server.oci.tar"
    archive.unlink(missing_ok=True)
    buildah("push", "--quiet", SERVER_IMAGE, f"oci-archive:{archive}:roadsign-fleet/server:bench")
    results = {
        "image": SERVER_IMAGE,
        "dockerfile": "docker/server.Dockerfile, FROM lines rebased (nothing else changed)",
        "upstream_base": UPSTREAM_BASE,
        "base": (
            f"debootstrap --variant=minbase {SUITE} from {mirror}, upgraded from "
            f"{', '.join(s for e in sources for s in e.suites)}; + {', '.join(BASE_PACKAGES)} "
            "(no recommends, no docs/man/locales); committed with buildah from scratch"
        ),
        "debian_version": probe["debian"],
        "python": probe["python"],
        "venv_pip": probe["pip"],
        "venv_packages": len(pins(installed)),
        "venv_at_constraints_pins": True,
        "image_size_mb": round(server["size"] / 1e6, 1),
        "image_size_bytes": server["size"],
        "buildah_images_size": server["buildah_images_size"],
        "layers": server["layers"],
        "oci_archive_gzip_mb": round(archive.stat().st_size / 1e6, 1),
        "oci_archive_gzip_bytes": archive.stat().st_size,
        "base_image_size_mb": round(base["size"] / 1e6, 1),
        "venv_mb": round(parse_size(probe["venv"]) / 1e6, 1),
        "user": config.get("User"),
        "uid_gid_in_container": f"{probe['uid']}:{probe['gid']}",
        "entrypoint_cmd": default_command,
        "help_ok": True,
        "migrate_reached_head": head,
        "labels": config.get("Labels", {}),
        "exposed_ports": sorted(config.get("ExposedPorts", {})),
        "image_ca_certificates": int(probe["cas"]),
        "host_only_cas_in_image": leaked,
        "seconds": seconds,
        "versions": versions,
        "isolation": "chroot",
        "storage_driver": "vfs",
    }
    print(json.dumps(results, indent=2))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
