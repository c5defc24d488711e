"""The cluster fault test, scaled to CI (bench/fault_cluster.py): calls on a 3-node R3
cluster while the leaders of the meta layer, the calls, the work and the claims die,
a node is cut off, an executor freezes past its ack wait, and a node loses its disk.

The full version (50 calls/s for about 100 s) is ``make fault-cluster``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

# A stream whose leader dies has none for nats-server's election timeout (4 to 9 s,
# fixed in its raft), and a message delivered into a connection that died with its
# node comes back after the ack wait (5 s): a call caught by both waits about 15 s. Run
# alone (make fault-cluster) the longest wait was 8 to 10 s; here other tests share the
# two cores, and the same run has taken 21 s.
LONGEST_WAIT_S = 30.0


@pytest.mark.postgres
def test_every_call_ends_once_while_the_clusters_nodes_fail(
    tmp_path: Path, postgres_url: str
) -> None:
    counts_file = tmp_path / "fault_cluster.json"
    # Faults 6 s apart: a node restarted has caught up before the next one dies (closer, two
    # nodes out of date at once leave a stream without a quorum, which no client can help).
    scaled = ["--calls", "300", "--rate", "15", "--every", "6", "--down", "2", "--cut-off", "5"]
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fault_cluster",
            *scaled,
            "--postgres",
            postgres_url,
            "--json",
            str(counts_file),
        ],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    print(finished.stdout)  # the figures, for whoever reads the CI log
    counts = json.loads(counts_file.read_text())

    # Meta leader, the calls', the work's and the claims' leaders; a node cut off; an
    # executor frozen; a node's store wiped.
    assert len(counts["faults"]) == 7, counts["faults"]
    zeros = (
        "lost",
        "stored_twice",
        "pendings_stored_twice",
        "different_results",
        "different_pendings",
        "stored_out_of_order",
        "not_success",
        "keys_changed",
        "double_billed",
        "unbilled",
    )
    assert {name: counts[name] for name in zeros} == dict.fromkeys(zeros, 0)
    assert counts["accepted"] == counts["billed"] == counts["calls"]
    assert counts["nodes_differ"] == []
    assert counts["max_wait_beyond_api_s"] < LONGEST_WAIT_S, counts["slowest"]
    # Each fault that took a stream's leader away (killed, cut off, wiped) left it without
    # one until the others elected another: how long is measured.
    led_again = counts["led_again_after"]
    took_leaders = [
        fault.split(" ", 1)[1]
        for fault in counts["faults"]
        if "leader of MIDCALL" in fault or "leader of KV" in fault or "leading" in fault
    ]
    assert len(took_leaders) == 5, counts["faults"]
    assert all(led_again.get(fault, 0) > 0 for fault in took_leaders), led_again
    assert "no fault" not in counts["repeated_after"]
    assert finished.returncode == 0, finished.stderr[-2000:]
