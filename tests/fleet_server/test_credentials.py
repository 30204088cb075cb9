"""Device passwords are checked against the broker's own ``$7$`` hashes, and a good check is
remembered only as long as, and only for the hash, it was made against."""

from __future__ import annotations

import pytest

from fleet_server.credentials import CheckedPasswords, mosquitto_hash, mosquitto_hash_matches

DIGEST = mosquitto_hash("right-password")


def test_the_right_password_matches_its_hash_and_a_wrong_one_does_not() -> None:
    assert mosquitto_hash_matches("right-password", DIGEST)
    assert not mosquitto_hash_matches("wrong-password", DIGEST)
    assert not mosquitto_hash_matches("right-password", mosquitto_hash("right-password")[:-4])


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "plain",
        "$6$10000$c2FsdA==$ZGlnZXN0",  # another scheme
        "$7$many$c2FsdA==$ZGlnZXN0",
        "$7$0$c2FsdA==$ZGlnZXN0",
        "$7$99999999$c2FsdA==$ZGlnZXN0",  # would burn seconds of CPU per request
        "$7$10000$not base64!$ZGlnZXN0",
        "$7$10000$c2FsdA==",
    ],
)
def test_a_malformed_stored_hash_matches_nothing_and_never_raises(malformed: str) -> None:
    assert not mosquitto_hash_matches("anything", malformed)


def _count_slow_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords each PBKDF2 check is asked about, which then always matches."""
    slow: list[str] = []

    def matching(password: str, digest: str) -> bool:
        slow.append(password)
        return True

    monkeypatch.setattr("fleet_server.credentials.mosquitto_hash_matches", matching)
    return slow


def test_a_verified_password_is_remembered_for_its_ttl_and_checked_again_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def counted(password: str, digest: str) -> bool:
        calls.append(password)
        return mosquitto_hash_matches(password, digest)

    monkeypatch.setattr("fleet_server.credentials.mosquitto_hash_matches", counted)
    checked = CheckedPasswords(ttl_s=60)
    assert checked.matches("cam-1", "right-password", DIGEST, now=0)
    assert checked.matches("cam-1", "right-password", DIGEST, now=59)
    assert len(calls) == 1  # the second answer came from memory
    assert checked.matches("cam-1", "right-password", DIGEST, now=61)
    assert len(calls) == 2  # expired: PBKDF2 again
    assert not checked.matches("cam-1", "wrong-password", DIGEST, now=62)
    assert not checked.matches("cam-1", "wrong-password", DIGEST, now=63)
    assert len(calls) == 4  # a failure is never remembered


def test_a_new_hash_or_another_user_misses_the_cache_at_once() -> None:
    checked = CheckedPasswords(ttl_s=3600)
    assert checked.matches("cam-1", "right-password", DIGEST, now=0)
    reset = mosquitto_hash("new-password")  # the device's credential was reset
    assert not checked.matches("cam-1", "right-password", reset, now=1)
    assert checked.matches("cam-1", "new-password", reset, now=2)
    assert not checked.matches("cam-2", "wrong", DIGEST, now=3)


def test_the_cache_keeps_at_most_its_bound_dropping_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow = _count_slow_checks(monkeypatch)
    checked = CheckedPasswords(ttl_s=3600, max_entries=2)
    for user in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        assert checked.matches(user, "pw", DIGEST, now=0)
    assert slow == ["pw"] * 3
    assert checked.matches("a", "pw", DIGEST, now=1)
    assert checked.matches("c", "pw", DIGEST, now=1)
    assert len(slow) == 3
    assert checked.matches("b", "pw", DIGEST, now=1)
    assert len(slow) == 4  # dropped: checked again


def test_a_zero_ttl_checks_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _count_slow_checks(monkeypatch)
    checked = CheckedPasswords(ttl_s=0)
    assert checked.matches("a", "pw", DIGEST, now=0)
    assert checked.matches("a", "pw", DIGEST, now=0)
    assert len(slow) == 2
