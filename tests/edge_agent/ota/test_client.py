"""The OTA client against a real python-tuf repository over real HTTP: what it verifies, what it
refuses (each attack with an error naming it), and downloads that resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import TargetFile

from edge_agent.exceptions import OtaDownloadError, OtaRefreshError, OtaVerificationError
from edge_agent.ota.client import OtaClient, basic_authorization
from edge_agent.ota.state import RunningModel, Verdict, decide
from tests.edge_agent.ota.conftest import DEVICE, Served
from tests.tls import make_pki
from tests.tuf_repository import TufRepository, sha256

SHIPPED = RunningModel(version="default", release=0, sha256="")


def test_signed_assignment_and_model_resolve_and_download_verified(served: Served) -> None:
    payload, _ = served.publish_model("2026.12.0")
    client = served.client()
    client.refresh()
    signed = client.assignment(DEVICE)
    assert signed is not None
    assert (signed.device_id, signed.version, signed.release) == (DEVICE, "2026.12.0", 1)
    resolved = client.model_info(signed.target)
    assert resolved is not None
    model, targetinfo = resolved
    assert (model.sha256, model.length) == (sha256(payload), len(payload))
    decision = decide(
        device_id=DEVICE, running=SHIPPED, signed=signed, model=model, max_bytes=1 << 30
    )
    assert decision.verdict is Verdict.INSTALL
    path = client.download(targetinfo)
    assert path.read_bytes() == payload
    # the consistent-snapshot path: dir/{sha256}.{basename}
    assert any(p.endswith(f"/{sha256(payload)}.bundle.tar") for p in served.journal.paths())


def test_device_without_assignment_gets_none(served: Served) -> None:
    client = served.client()
    client.refresh()
    assert client.assignment(DEVICE) is None


def test_tampered_artifact_is_refused_and_discarded(served: Served) -> None:
    payload, info = served.publish_model("2026.12.0")
    assert isinstance(info, TargetFile)
    tampered = bytearray(payload)
    tampered[len(tampered) // 2] ^= 0xFF
    served.repo.write_target(info, bytes(tampered))
    client = served.client()
    client.refresh()
    resolved = client.model_info(info.path)
    assert resolved is not None
    with pytest.raises(OtaVerificationError, match="tampered artifact"):
        client.download(resolved[1])
    assert list(client.downloads_dir.iterdir()) == []


def test_assignment_signed_by_a_wrong_key_is_refused(served: Served) -> None:
    attacker = CryptoSigner.generate_ed25519()
    _, info = served.publish_model("2026.12.0")
    assert isinstance(info, TargetFile)
    bin_name = served.repo.succinct.get_role_for_target(f"assignments/{DEVICE}")
    served.repo.signers[bin_name] = attacker
    served.repo.assign(DEVICE, info, rollout_id="forged")
    served.repo.publish()
    client = served.client()
    client.refresh()
    with pytest.raises(OtaRefreshError, match="not signed by the keys"):
        client.assignment(DEVICE)


def test_model_target_signed_by_a_wrong_key_is_refused(served: Served) -> None:
    served.repo.signers["targets"] = CryptoSigner.generate_ed25519()
    served.publish_model("2026.12.0")
    with pytest.raises(OtaRefreshError, match="not signed by the keys"):
        served.client().refresh()


def test_replayed_older_metadata_is_refused_as_rollback(served: Served) -> None:
    old = served.repo.copy_metadata()
    served.publish_model("2026.12.0")
    client = served.client()
    client.refresh()
    served.repo.restore_metadata(old)
    with pytest.raises(OtaRefreshError, match="rollback attack"):
        client.refresh()


def test_snapshot_naming_an_older_targets_version_is_refused_as_rollback(served: Served) -> None:
    served.publish_model("2026.12.0")
    client = served.client()
    client.refresh()
    assert client.assignment(DEVICE) is not None
    # a holder of the online key re-points snapshot at targets version 1
    served.repo.point_snapshot_at_old_targets(1)
    with pytest.raises(OtaRefreshError, match="rollback attack"):
        client.refresh()


def test_expired_timestamp_is_refused_as_freeze(served: Served) -> None:
    served.repo.timestamp_days = -1
    served.publish_model("2026.12.0")
    with pytest.raises(OtaRefreshError, match="freeze attack"):
        served.client().refresh()


def test_unreachable_repository_is_a_refresh_error(served: Served) -> None:
    served.journal.down = True
    with pytest.raises(OtaRefreshError, match="HTTP 503"):
        served.client().refresh()


def test_target_with_more_bytes_than_signed_is_refused(served: Served) -> None:
    payload, info = served.publish_model("2026.12.0")
    assert isinstance(info, TargetFile)
    served.journal.extra_bytes[f"{sha256(payload)}.bundle.tar"] = b"\0" * 100_000
    client = served.client()
    client.refresh()
    resolved = client.model_info(info.path)
    assert resolved is not None
    with pytest.raises(OtaDownloadError, match="endless-data attack"):
        client.download(resolved[1])
    assert list(client.downloads_dir.iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request(served: Served) -> None:
    payload, info = served.publish_model("2026.12.0")
    assert isinstance(info, TargetFile)
    name = f"{sha256(payload)}.bundle.tar"
    half = len(payload) // 2
    served.journal.cut_after[name] = half
    client = served.client()
    client.refresh()
    resolved = client.model_info(info.path)
    assert resolved is not None
    with pytest.raises(OtaDownloadError, match="resumes"):
        client.download(resolved[1])
    part = client.downloads_dir / f"{sha256(payload)}.part"
    assert part.stat().st_size == half
    path = client.download(resolved[1])
    assert path.read_bytes() == payload
    ranged = [h.get("Range") for p, h in served.journal.requests if p.endswith(name)]
    assert ranged == [None, f"bytes={half}-"]


def test_every_request_of_a_refresh_and_a_download_carries_the_device_credentials(
    served: Served,
) -> None:
    payload, info = served.publish_model("2026.12.0")
    assert isinstance(info, TargetFile)
    client = OtaClient(
        repository_url=served.url,
        trusted_root=served.repo.trusted_root(),
        state_dir=served.tmp / "state",
        timeout_s=10,
        authorization=basic_authorization(DEVICE, "s3cret:with-colon"),
    )
    client.refresh()
    signed = client.assignment(DEVICE)
    assert signed is not None
    resolved = client.model_info(signed.target)
    assert resolved is not None
    assert client.download(resolved[1]).read_bytes() == payload
    sent = {headers.get("Authorization") for _, headers in served.journal.requests}
    # base64 of "<device>:s3cret:with-colon": the password may hold colons, the user may not
    assert sent == {basic_authorization(DEVICE, "s3cret:with-colon")}
    assert len(served.journal.requests) >= 5  # timestamp, snapshot, targets, director, bin, model


def test_trusted_root_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(OtaRefreshError, match="trusted_root_file"):
        OtaClient.from_root_file(
            tmp_path / "missing.json", repository_url="http://127.0.0.1:9", state_dir=tmp_path
        )


def test_https_repository_is_verified_with_the_profile_ca_file(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    repo = TufRepository(tmp_path / "repo")
    with repo.serve(tls=(pki.server_cert, pki.server_key)) as (url, _):
        assert url.startswith("https://")
        good = OtaClient(
            repository_url=url,
            trusted_root=repo.trusted_root(),
            state_dir=tmp_path / "good",
            ca_file=pki.ca,
        )
        good.refresh()
        assert good.assignment(DEVICE) is None
        wrong = OtaClient(
            repository_url=url,
            trusted_root=repo.trusted_root(),
            state_dir=tmp_path / "wrong",
            ca_file=pki.other_ca,
        )
        with pytest.raises(OtaRefreshError, match="cannot be reached"):
            wrong.refresh()
