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
