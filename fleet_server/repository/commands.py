"""What ``roadsign-fleet keys ...`` and ``models publish`` do, behind the argument parsing.

Key files live in one operator folder: ``root-1.pem`` ... ``root-N.pem``, ``targets-1.pem``,
``online.pem`` and ``public-keys.json``. Offline keys (root, targets) are encrypted with the
operator's passphrase, which comes from ``--passphrase-file`` or the environment variable
`PASSPHRASE_ENV`, never from the command line (where ``ps`` and shell history would keep it);
the online key is encrypted with the server's ``tuf.online_key_passphrase``, so that ``serve``
can read it. A replaced key's file is renamed ``*.pem.retired``, never deleted.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from fleet_server.db import session_scope
from fleet_server.exceptions import BundleError, RepositoryError, SigningKeyError
from fleet_server.models import ModelVersion
from fleet_server.repository import service, storage
from fleet_server.repository.builder import role_keyids
from fleet_server.repository.keys import generate_signer, load_signer, write_key_file
from fleet_server.repository.mlflow_source import fetch_bundle
from fleet_server.repository.tuf_api import CryptoSigner, Key, Root, Signer, Targets, Timestamp
from fleet_server.settings import ServerSettings

PASSPHRASE_ENV = "ROADSIGN_FLEET_KEYS_PASSPHRASE"  # noqa: S105 - the variable's name
ONLINE_KEY_FILE = "online.pem"
PUBLIC_KEYS_FILE = "public-keys.json"
MAX_PASSPHRASE_FILE_BYTES = 4096
KEY_FILE = re.compile(r"^(?P<role>root|targets)-(?P<n>[0-9]{1,4})\.pem$")


@dataclass(frozen=True)
class KeysInitialised:
    """What ``keys init`` wrote."""

    files: list[Path]
    root_threshold: int


def offline_passphrase(passphrase_file: Path | None, env: Mapping[str, str]) -> str:
    """The operator's passphrase of the offline keys: the file's first line, or the variable."""
    if passphrase_file is not None:
        try:
            if passphrase_file.stat().st_size > MAX_PASSPHRASE_FILE_BYTES:
                raise SigningKeyError(f"{passphrase_file} is too large for a passphrase file")
            lines = passphrase_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SigningKeyError(f"cannot read passphrase file {passphrase_file}: {e}") from e
        passphrase = lines[0] if lines else ""
    else:
        passphrase = env.get(PASSPHRASE_ENV, "")
    if not passphrase:
        raise SigningKeyError(
            f"no passphrase for the offline keys: give --passphrase-file or set {PASSPHRASE_ENV}"
        )
    return passphrase


def _key_files(directory: Path, role: str) -> list[Path]:
    found = []
    for path in sorted(directory.glob(f"{role}-*.pem")):
        match = KEY_FILE.match(path.name)
        if match is not None and match["role"] == role:
            found.append(path)
    return found


def _next_key_file(directory: Path, role: str) -> Path:
    used = [int(m["n"]) for p in directory.glob(f"{role}-*") if (m := KEY_FILE.match(p.name))]
    retired = [
        int(m["n"])
        for p in directory.glob(f"{role}-*.pem.retired")
        if (m := KEY_FILE.match(p.name.removesuffix(".retired")))
    ]
    return directory / f"{role}-{max([0, *used, *retired]) + 1}.pem"


def _write_public_keys(directory: Path, keys: Mapping[str, Sequence[Key]]) -> Path:
    """The public halves by role (root, targets, online), for the operator's records."""
    path = directory / PUBLIC_KEYS_FILE
    document = {
        role: [{"keyid": key.keyid, **key.to_dict()} for key in role_keys]
        for role, role_keys in keys.items()
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def _public_keys_of_current_root(engine: Engine, directory: Path) -> Path:
    """Rewrite the public-keys file from the root now stored (after a rotation)."""
    with session_scope(engine) as session:
        root = storage.load_state(session).root.signed
    roles = {"root": Root.type, "targets": Targets.type, "online": Timestamp.type}
    return _write_public_keys(
        directory,
        {label: [root.keys[k] for k in root.roles[role].keyids] for label, role in roles.items()},
    )


def keys_init(
    settings: ServerSettings,
    engine: Engine,
    *,
    directory: Path,
    root_keys: int,
    root_threshold: int,
    passphrase: str,
) -> KeysInitialised:
    """Generate the repository's keys into `directory` and initialise the repository."""
    if settings.mode == "production" and root_threshold < 2:
        raise RepositoryError("production mode refused: root threshold must be at least 2")
    if not 1 <= root_threshold <= root_keys:
        raise RepositoryError(f"root threshold {root_threshold} needs 1 to {root_keys} keys")
    with session_scope(engine) as session:  # refuse before writing any file
        if storage.is_initialised(session):
            raise RepositoryError("the TUF repository is already initialised")
    directory.mkdir(parents=True, exist_ok=True)
    roots = [generate_signer() for _ in range(root_keys)]
    targets = [generate_signer()]
    online = generate_signer()
    files = []
    for role, signers in (("root", roots), ("targets", targets)):
        for signer in signers:
            path = _next_key_file(directory, role)
            write_key_file(signer, path, passphrase)
            files.append(path)
    online_path = directory / ONLINE_KEY_FILE
    write_key_file(online, online_path, settings.tuf.online_key_passphrase.get_secret_value())
    files.append(online_path)
    files.append(
        _write_public_keys(
            directory,
            {
                "root": [s.public_key for s in roots],
                "targets": [s.public_key for s in targets],
                "online": [online.public_key],
            },
        )
    )
    with session_scope(engine) as session:
        service.initialise(
            session,
            settings,
            root_keys=roots,
            root_threshold=root_threshold,
            targets_keys=targets,
            online=online,
        )
    return KeysInitialised(files=files, root_threshold=root_threshold)


def trusted_signers(
    directory: Path, role: str, trusted: Sequence[str], passphrase: str
) -> list[CryptoSigner]:
    """The signers of `directory`'s key files for `role` that the root trusts now."""
    signers = [load_signer(path, passphrase) for path in _key_files(directory, role)]
    return [s for s in signers if s.public_key.keyid in trusted]


def _current_root_keyids(engine: Engine, role: str) -> list[str]:
    with session_scope(engine) as session:
        return role_keyids(storage.load_state(session).root, role)


def keys_rotate(
    settings: ServerSettings,
    engine: Engine,
    *,
    directory: Path,
    role: str,
    replace: str | None,
    passphrase: str,
) -> tuple[int, Path]:
    """Replace the key in `directory`/`replace` (e.g. ``root-2``) of `role` with a new one
    (for ``online``: the online key, see `_rotate_online`).

    Root N+1 is signed by every trusted root key in the folder (the old threshold, the
    replaced key included) and the new key; for targets, targets is re-signed with the new
    key. Returns the new root version and the new key file.
    """
    if role == "online":
        return _rotate_online(settings, engine, directory=directory, passphrase=passphrase)
    if replace is None:
        raise RepositoryError(f"rotating a {role} key needs --replace, e.g. {role}-1")
    old_path = directory / f"{replace.removesuffix('.pem')}.pem"
    if KEY_FILE.match(old_path.name) is None or not old_path.name.startswith(role + "-"):
        raise RepositoryError(f"--replace names a {role} key file like {role}-1, not {replace!r}")
    old = load_signer(old_path, passphrase)
    trusted = _current_root_keyids(engine, role)
    if old.public_key.keyid not in trusted:
        raise RepositoryError(f"{old_path} holds no {role} key the current root trusts")
    root_keyids = _current_root_keyids(engine, Root.type)
    roots = trusted_signers(directory, Root.type, root_keyids, passphrase)
    new = generate_signer()
    new_path = _next_key_file(directory, role)
    write_key_file(new, new_path, passphrase)
    signers = [*roots, new] if role == Root.type else roots
    targets_keys: list[Signer] = []
    if role == Targets.type:
        others = trusted_signers(directory, Targets.type, trusted, passphrase)
        kept: list[Signer] = [s for s in others if s.public_key.keyid != old.public_key.keyid]
        targets_keys = [*kept, new]
    with session_scope(engine) as session:
        version = service.rotate_root(
            session,
            settings,
            remove={role: [old.public_key.keyid]},
            add={role: [new.public_key]},
            signers=signers,
            targets_keys=targets_keys,
        )
    os.replace(old_path, old_path.with_name(old_path.name + ".retired"))
    _public_keys_of_current_root(engine, directory)
    return version, new_path


def _retired_name(path: Path) -> Path:
    """A free ``*.retired`` name beside `path` (an online key may be retired many times)."""
    candidate = path.with_name(path.name + ".retired")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.retired-{n}")
    return candidate


def _rotate_online(
    settings: ServerSettings, engine: Engine, *, directory: Path, passphrase: str
) -> tuple[int, Path]:
    """A new online key: root N+1 and every online role re-signed with it.

    The new key file replaces ``online.pem`` only once the database holds the new root, and
    the old one is kept as ``online.pem.retired``; every replica must then be given the new
    file (until then, what its old key signs is refused, and it says so in its log).
    """
    root_signers = trusted_signers(
        directory, Root.type, _current_root_keyids(engine, Root.type), passphrase
    )
    targets_keys = trusted_signers(
        directory, Targets.type, _current_root_keyids(engine, Targets.type), passphrase
    )
    if not targets_keys:
        raise SigningKeyError(f"{directory} holds no targets key the current root trusts")
    current = directory / ONLINE_KEY_FILE
    staged = directory / (ONLINE_KEY_FILE + ".new")
    new = generate_signer()
    write_key_file(new, staged, settings.tuf.online_key_passphrase.get_secret_value())
    try:
        with session_scope(engine) as session:
            version = service.rotate_online_key(
                session,
                settings,
                new_online=new,
                root_signers=root_signers,
                targets_keys=targets_keys,
            )
    except BaseException:
        staged.unlink()  # nothing trusts it: no file should look like a key in use
        raise
    if current.exists():
        os.replace(current, _retired_name(current))
    os.replace(staged, current)
    _public_keys_of_current_root(engine, directory)
    return version, current


def models_publish(
    settings: ServerSettings,
    engine: Engine,
    *,
    bundle_dir: Path | None,
    from_mlflow: str | None = None,
    keys_dir: Path,
    passphrase: str,
    min_agent_version: str,
) -> ModelVersion:
    """Publish a bundle folder, or the bundle of an MLflow ``NAME@ALIAS``, signing targets with
    the key folder's trusted targets keys."""
    trusted = _current_root_keyids(engine, Targets.type)
    targets_keys = trusted_signers(keys_dir, Targets.type, trusted, passphrase)
    if not targets_keys:
        raise SigningKeyError(f"{keys_dir} holds no targets key the current root trusts")
    online = service.online_signer(settings.tuf)
    if from_mlflow is None:
        if bundle_dir is None:
            raise BundleError("give --bundle DIR or --from-mlflow NAME@ALIAS")
        with session_scope(engine) as session:
            return service.publish_bundle(
                session,
                settings,
                bundle_dir=bundle_dir,
                targets_keys=targets_keys,
                online=online,
                min_agent_version=min_agent_version,
            )
    tracking_uri = settings.tuf.mlflow_tracking_uri
    if tracking_uri is None:
        raise BundleError("--from-mlflow needs tuf.mlflow_tracking_uri in the settings")
    with tempfile.TemporaryDirectory(prefix="roadsign-bundle-") as work:
        fetched = fetch_bundle(
            tracking_uri,
            from_mlflow,
            Path(work) / "bundle",
            max_bytes=settings.tuf.max_bundle_bytes,
        )
        with session_scope(engine) as session:
            return service.publish_bundle(
                session,
                settings,
                bundle_dir=fetched.folder,
                targets_keys=targets_keys,
                online=online,
                min_agent_version=min_agent_version,
                registered_model=fetched.name,
                registered_version=fetched.version,
                mlflow_run_id=fetched.run_id,
            )
