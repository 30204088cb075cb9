"""The outbox keeps every message until acknowledged, across kills, and is bounded."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge_agent.outbox import SEQ_BLOCK, Outbox, OutboxError


def _outbox(path: Path, **limits: int) -> Outbox:
    return Outbox(
        path / "outbox.sqlite3",
        max_messages=limits.get("messages", 100),
        max_bytes=limits.get("bytes", 1_000_000),
    )


def test_messages_come_out_in_order_until_acknowledged(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path)
    ids = [outbox.put("t/a", f"m{i}".encode()) for i in range(5)]
    assert [m.payload for m in outbox.pending(3)] == [b"m0", b"m1", b"m2"]
    assert [m.id for m in outbox.pending(10, after=ids[2])] == ids[3:]
    assert outbox.ack(ids[:2]) == 2
    assert outbox.ack(ids[:2]) == 0  # a redelivered ack changes nothing
    assert outbox.depth == 3
    assert [m.payload for m in outbox.pending(10)] == [b"m2", b"m3", b"m4"]


def test_a_full_outbox_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path, messages=3)
    for i in range(5):
        outbox.put("t", f"m{i}".encode())
    assert [m.payload for m in outbox.pending(10)] == [b"m2", b"m3", b"m4"]
    assert outbox.dropped == 2
    by_bytes = _outbox(tmp_path / "b", bytes=30)
    for i in range(4):
        by_bytes.put("t", b"x" * 9 + str(i).encode())  # 11 bytes with the topic
    assert by_bytes.depth == 2
    assert by_bytes.size_bytes == 22
    assert by_bytes.dropped == 2
    with pytest.raises(OutboxError, match="cannot fit"):
        by_bytes.put("t", b"y" * 40)


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path, messages=2)
    seqs = [outbox.next_seq() for _ in range(3)]
    for i in range(3):
        outbox.put("t", str(i).encode(), retain=i == 2)
    outbox.close()
    again = _outbox(tmp_path, messages=2)
    assert seqs == [0, 1, 2]
    assert again.next_seq() > 2  # sequence numbers never repeat after a restart
    assert again.dropped == 1
    assert [(m.payload, m.retain) for m in again.pending(10)] == [(b"1", False), (b"2", True)]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path, messages=10_000)

    def write(n: int) -> None:
        for i in range(200):
            outbox.put("t", f"{n}-{i}".encode())

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outbox.depth == 800
    assert len({m.payload for m in outbox.pending(1000)}) == 800


def test_kill_9_loses_nothing_already_stored(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from edge_agent.outbox import Outbox
        outbox = Outbox(Path({str(path)!r}), max_messages=100000, max_bytes=10**8)
        for i in range(100000):
            outbox.put("t", str(i).encode())
            print(i, flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    confirmed = -1
    for line in process.stdout:
        confirmed = int(line)
        if confirmed >= 300:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    stored = [
        int(m.payload) for m in Outbox(path, max_messages=10**6, max_bytes=10**9).pending(10**6)
    ]
    # Every message put() returned for is there, in order, with no gaps.
    assert stored[: confirmed + 1] == list(range(confirmed + 1))


def test_an_unopenable_outbox_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        Outbox(blocker / "outbox.sqlite3", max_messages=10, max_bytes=100)
    with pytest.raises(OutboxError, match="room for at least one"):
        Outbox(tmp_path / "o.sqlite3", max_messages=0, max_bytes=100)


def test_sequence_numbers_survive_a_crash_mid_block_without_repeating(tmp_path: Path) -> None:
    # A process killed without close() keeps only what reached the disk: the reserved block.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from edge_agent.outbox import Outbox\n"
        f"o = Outbox(Path({str(tmp_path / 'o.sqlite3')!r}), max_messages=10, max_bytes=10**6)\n"
        "print(','.join(str(o.next_seq()) for _ in range(int(sys.argv[1]))), flush=True)\n"
        "os._exit(0)\n"
    )
    handed: list[int] = []
    for count in (3, SEQ_BLOCK + 5, 1):
        out = subprocess.run(
            [sys.executable, "-c", script, str(count)], capture_output=True, text=True, check=True
        )
        handed += [int(v) for v in out.stdout.strip().split(",")]
    assert len(handed) == len(set(handed)) == SEQ_BLOCK + 9
    assert handed == sorted(handed)
    assert handed[-1] < 4 * SEQ_BLOCK  # at most a block skipped per crash
