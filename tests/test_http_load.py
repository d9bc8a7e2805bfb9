"""A small, bounded run of benchmarks/http_load.py in CI: concurrent clients, zero 5xx.

The 100,000-record run lives in benchmarks/ (its numbers are in the README); this
keeps the same code path honest on every commit with a database of 2,000 records.
"""
import pytest

from tests.helpers import free_port, load_benchmark


@pytest.fixture(scope="module")
def http_load():
    return load_benchmark("http_load")


def test_concurrent_clients_get_no_server_errors(http_load, tmp_path):
    db = str(tmp_path / "load.db")
    http_load.build_database(db, 2000)
    port = free_port()
    proc = http_load.start_server(db, port)
    try:
        summary = http_load.run(f"http://127.0.0.1:{port}", "load", list(range(1, 2001)),
                                requests=150, clients=4, time_cap=120)
        # the server still answers after the run
        after = http_load.one_request(f"http://127.0.0.1:{port}", "load", "record.json", 5, b"")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert summary["sent"] == 150
    assert summary["server_errors"] == 0
    assert summary["statuses"] == [200]
    assert set(summary["kinds"]) == {"record.json", "record.html", "search.json"}
    assert after[1] == 200


def test_hostile_mix_gets_no_server_errors_and_no_stall(http_load, tmp_path):
    """Large-pixel uploads and bodies at and beyond the parser's limits, among record pages."""
    db = str(tmp_path / "load.db")
    http_load.build_database(db, 500)
    port = free_port()
    proc = http_load.start_server(db, port)
    base = f"http://127.0.0.1:{port}"
    try:
        http_load.run(base, "load", [1], requests=3, clients=1, time_cap=120)  # warm, outside the measurement
        summary = http_load.run(base, "load", list(range(1, 501)), requests=60, clients=4, time_cap=240,
                                mix=http_load.HOSTILE_MIX, seed=3)
        peak = http_load.peak_rss_mb(proc.pid)
        after = http_load.one_request(base, "load", "record.json", 5, b"")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    kinds = summary["kinds"]
    assert summary["sent"] == 60 and summary["server_errors"] == 0
    assert kinds["record.json"]["statuses"] == [200]
    for kind in ("upload.large_pixels", "form.at_limits"):
        if kind in kinds:
            assert kinds[kind]["statuses"] == [200], kind
    for kind, status in (("form.17_parts", 400), ("form.40000_params", 431), ("form.nested", 400), ("body.11MB", 413)):
        if kind in kinds:
            assert kinds[kind]["statuses"] == [status], kind
    assert peak is not None and peak < 1500  # two decodes at once of ~170 MB each, over the server's own
    assert after[1] == 200
