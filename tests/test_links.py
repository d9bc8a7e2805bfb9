"""Cross-collection links: the blocked engine against brute force, the command, staleness."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.errors import InvalidRequestError, NotFoundError
from datasette_embeddings.files import loader
from datasette_embeddings.search import links
from datasette_embeddings.storage.connection import connect
from tests.helpers import file_hashes, make_records, write_parquet


def unit(rng, n, dims):
    m = rng.standard_normal((n, dims)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# ---------------------------------------------------------------- the engine, exact
@pytest.mark.parametrize("n_source,n_target,k,block", [(37, 5000, 5, 8), (50, 300, 7, 1000), (20, 3, 5, 4)])
def test_blocked_top_k_equals_brute_force(n_source, n_target, k, block):
    rng = np.random.default_rng(n_target)
    source, target = unit(rng, n_source, 16), unit(rng, n_target, 16)
    cols, sims = links.top_k_between(source, target, k, block_rows=block)
    brute = source @ target.T
    want = np.argsort(-brute, axis=1, kind="stable")[:, : min(k, n_target)]
    assert np.array_equal(cols, want)
    assert np.allclose(sims, np.take_along_axis(brute, want, axis=1), atol=1e-6)


def test_two_step_top_k_finds_scores_in_the_short_last_chunk():
    scores = np.zeros((2, links.CHUNK * 20 + 7), dtype=np.float32)
    scores[0, -1] = 5.0  # in the short tail chunk
    scores[1, 3] = 4.0
    cols, top = links.top_k_of_rows(scores, 2)
    assert cols[0, 0] == scores.shape[1] - 1 and top[0, 0] == 5.0
    assert cols[1, 0] == 3


def test_excluded_ranges_never_match():
    rng = np.random.default_rng(1)
    m = unit(rng, 40, 8)
    ranges = np.array([[i - i % 4, i - i % 4 + 4] for i in range(40)])  # each row's group of 4
    cols, sims = links.top_k_between(m, m, 3, block_rows=7, exclude=ranges)
    for i in range(40):
        assert not set(cols[i]) & set(range(ranges[i, 0], ranges[i, 1]))
        scores = m[i] @ m.T
        scores[ranges[i, 0]:ranges[i, 1]] = -np.inf
        assert np.allclose(sims[i], np.sort(scores)[::-1][:3], atol=1e-6)


def test_subject_top_k_is_the_best_depiction_pair_of_each_subject_pair():
    rng = np.random.default_rng(2)
    source, target = unit(rng, 30, 8), unit(rng, 45, 8)
    source_groups = np.array([0, 3, 4, 10, 11, 20, 25])  # uneven subjects
    target_groups = np.array([0, 1, 5, 6, 7, 20, 30, 44])
    groups, scores, src_rows, tgt_rows = links.subject_top_k(
        source, source_groups, target, target_groups, 3, block_rows=5
    )
    sb, tb = np.append(source_groups, 30), np.append(target_groups, 45)
    full = source @ target.T
    for g in range(len(source_groups)):
        best = np.array([full[sb[g]:sb[g + 1], tb[t]:tb[t + 1]].max() for t in range(len(target_groups))])
        order = np.argsort(-best, kind="stable")[:3]
        assert list(groups[g]) == list(order)
        assert np.allclose(scores[g], best[order], atol=1e-6)
        for j in range(3):  # the named depiction pair is inside the subjects and gives the score
            a, b = src_rows[g, j], tgt_rows[g, j]
            assert sb[g] <= a < sb[g + 1] and tb[groups[g, j]] <= b < tb[groups[g, j] + 1]
            assert full[a, b] == pytest.approx(scores[g, j], abs=1e-6)


@pytest.mark.parametrize("workers", [2, 3])
def test_threads_over_blocks_give_the_same_links_as_one_thread(workers):
    rng = np.random.default_rng(7)
    source, target = unit(rng, 203, 16), unit(rng, 2600, 16)
    ranges = np.array([[i % 50, i % 50 + 3] for i in range(203)])
    seen: list[int] = []
    one = links.top_k_between(source, target, 5, block_rows=9, exclude=ranges)
    many = links.top_k_between(source, target, 5, block_rows=9, exclude=ranges, workers=workers, progress=seen.append)
    assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
    assert sum(seen) == 203 and len(seen) == 23  # every block reported once, from the calling thread
    source_groups = np.array([0, 3, 4, 10, 11, 20, 25, 90, 150, 200])
    target_groups = np.arange(0, 2600, 13)
    one = links.subject_top_k(source, source_groups, target, target_groups, 4, block_rows=40)
    many = links.subject_top_k(source, source_groups, target, target_groups, 4, block_rows=40, workers=workers)
    for a, b in zip(one, many):
        assert np.array_equal(a, b)


def test_fusion_is_reciprocal_rank_fusion():
    def run(model, pairs):
        r = links.Run(model, "subject", "a", "b", 3, 0.0, (), json.dumps(["version", 1]))
        r.rows = [(model, "subject", "image-image", 1, 10 + i, "a", src, "b", tgt, 0.9, rank, r.data_version)
                  for i, (src, tgt, rank) in enumerate(pairs)]
        return r

    one = run("m1", [("s1", "t1", 1), ("s1", "t2", 2), ("s1", "t3", 3)])
    two = run("m2", [("s1", "t2", 1), ("s1", "t3", 2), ("s1", "t4", 3)])
    fused = links.fuse([one, two], k=3)
    assert fused.model == "fused:m1+m2"
    got = [(row[8], row[9], row[10]) for row in fused.rows]
    top = 2 / 61
    assert [g[0] for g in got] == ["t2", "t3", "t1"]  # 1/62+1/61 > 1/63+1/62 > 1/61
    assert got[0][1] == pytest.approx((1 / 62 + 1 / 61) / top, abs=1e-6)
    assert got[2][1] == pytest.approx((1 / 61) / top, abs=1e-6)
    assert [g[2] for g in got] == [1, 2, 3]
    # the fused row names the pair of the model that ranked it best (t2: m2's rank 1)
    assert fused.rows[0][4] == two.rows[0][4]


# ---------------------------------------------------------------- the command on a real database
@pytest.fixture
def db(tmp_path):
    records = make_records(n=12, providers=("met", "rijks", "bk"), models={"m-8": 8, "m-4": 4})
    # a text record on one met subject, so text-* comparisons exist for m-8
    extra = dict(records[0], depiction_id="met-title-0", attributes={"type": "text", "subject_title": "A title"})
    extra["embeddings"] = np.ones(8, dtype=np.float32)
    write_parquet(tmp_path / "a.parquet", records + [extra])
    path = tmp_path / "links.db"
    loader.load(str(path), [str(tmp_path / "a.parquet")])
    return path


def vectors(path, model, provider):
    conn = connect(str(path), readonly=True)
    try:
        vec = conn.execute("select vec_table from models where label = ?", [model]).fetchone()[0]
        rows = conn.execute(
            f"select r.id, r.depiction_id, r.subject_id, r.type, v.embedding from records r join {vec} v on v.id = r.id "
            "where r.model = ? and r.provider = ? order by r.id", [model, provider]
        ).fetchall()
    finally:
        conn.close()
    m = np.stack([np.frombuffer(r[4], dtype="<f4") for r in rows])
    return [r[:4] for r in rows], m / np.linalg.norm(m, axis=1, keepdims=True)


def stored(path, sql, params=()):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_links_command_matches_brute_force_per_comparison(db, workers):
    result = CliRunner().invoke(cli, ["links", str(db), "--from", "met", "--to", "rijks", "--model", "m-8", "--k", "3",
                                      "--threshold", "-1", "--workers", workers])
    assert result.exit_code == 0, result.output
    assert "m-8  met -> rijks  depiction: 39 links" in result.output
    src, a = vectors(db, "m-8", "met")
    tgt, b = vectors(db, "m-8", "rijks")
    scores = a @ b.T
    for i, (rid, depiction, _subject, kind) in enumerate(src):
        rows = stored(db, "select target_id, similarity, rank, comparison, target_key from links "
                          "where model = 'm-8' and source_id = ? order by rank", [rid])
        order = np.argsort(-scores[i], kind="stable")[:3]
        assert [r[0] for r in rows] == [tgt[j][0] for j in order]
        assert [r[4] for r in rows] == [tgt[j][1] for j in order]
        assert [r[1] for r in rows] == pytest.approx([float(scores[i, j]) for j in order], abs=1e-6)
        assert {r[3] for r in rows} == {f"{kind}-image"}


def test_threshold_drops_weaker_links(db):
    result = CliRunner().invoke(cli, ["links", str(db), "--from", "met", "--to", "rijks", "--model", "m-8",
                                      "--threshold", "0.5", "--comparison", "image-image"])
    assert result.exit_code == 0, result.output
    src, a = vectors(db, "m-8", "met")
    _tgt, b = vectors(db, "m-8", "rijks")
    images = [i for i, r in enumerate(src) if r[3] == "image"]
    want = sum(min(5, int((a[i] @ b.T >= 0.5).sum())) for i in images)
    rows = stored(db, "select similarity, comparison from links")
    assert len(rows) == want and all(s >= 0.5 and c == "image-image" for s, c in rows)


def test_subject_level_names_the_best_depiction_pair(db):
    result = CliRunner().invoke(cli, ["links", str(db), "--from", "met", "--to", "rijks", "--model", "m-4",
                                      "--level", "subject", "--k", "2", "--threshold", "-1", "-q"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    src, a = vectors(db, "m-4", "met")
    tgt, b = vectors(db, "m-4", "rijks")
    scores = a @ b.T
    subjects_a = sorted({s for _, _, s, _ in src})
    subjects_b = sorted({s for _, _, s, _ in tgt})
    rows = stored(db, "select source_key, target_key, similarity, rank, source_id, target_id from links "
                      "where model = 'm-4' and level = 'subject'")
    assert len(rows) == len(subjects_a) * 2
    for sa in subjects_a:
        ia = [i for i, r in enumerate(src) if r[2] == sa]
        best = {sb: max(scores[i, j] for i in ia for j, r in enumerate(tgt) if r[2] == sb) for sb in subjects_b}
        want = sorted(best, key=lambda s: -best[s])[:2]
        got = sorted((r for r in rows if r[0] == sa), key=lambda r: r[3])
        assert [r[1] for r in got] == want
        for r in got:
            i = next(i for i, x in enumerate(src) if x[0] == r[4])
            j = next(j for j, x in enumerate(tgt) if x[0] == r[5])
            assert src[i][2] == sa and tgt[j][2] == r[1]
            assert scores[i, j] == pytest.approx(r[2], abs=1e-6) == pytest.approx(float(best[r[1]]), abs=1e-6)


def test_links_inside_one_collection_skip_the_records_own_subject(db):
    result = CliRunner().invoke(cli, ["links", str(db), "--from", "bk", "--to", "bk", "--model", "m-4", "-q"])
    assert result.exit_code == 0, result.output
    rows = stored(db, "select source_key, target_key from links where source_provider = 'bk' and target_provider = 'bk'")
    assert rows
    subject = lambda key: int(key.split("-d")[1]) // 2  # noqa: E731  make_records: subject = i // 2
    assert all(subject(s) != subject(t) for s, t in rows)


def test_several_models_store_a_fused_ranking_and_skip_current_models(db):
    runner = CliRunner()
    args = ["links", str(db), "--from", "met", "--to", "bk", "--model", "m-8", "--model", "m-4", "--level", "subject"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "fused:m-4+m-8  met -> bk  subject:" in result.output
    fused = stored(db, "select rank, similarity from links where model = 'fused:m-4+m-8' order by source_key, rank")
    assert fused and all(0 < s <= 1 for _, s in fused)
    again = runner.invoke(cli, args)
    assert again.output.count("current, skipped") == 3
    before = stored(db, "select count(*) from links")[0][0]
    forced = runner.invoke(cli, args + ["--force"])
    assert "skipped" not in forced.output and stored(db, "select count(*) from links")[0][0] == before


def test_a_load_makes_links_stale_and_the_next_run_recomputes(db, tmp_path):
    runner = CliRunner()
    args = ["links", str(db), "--from", "met", "--to", "rijks", "--model", "m-4"]
    assert runner.invoke(cli, args).exit_code == 0
    conn = connect(str(db), readonly=True)
    try:
        [run] = [r for r in links.stored_runs(conn).values() if r["model"] == "m-4"]
        assert links.is_current(conn, run)
    finally:
        conn.close()
    newer = make_records(n=2, providers=("rijks",), models={"m-4": 4}, seed=9, created=1_800_000_000)
    write_parquet(tmp_path / "newer.parquet", newer)
    loader.load(str(db), [str(tmp_path / "newer.parquet")])
    conn = connect(str(db), readonly=True)
    try:
        [run] = [r for r in links.stored_runs(conn).values() if r["model"] == "m-4"]
        assert not links.is_current(conn, run)
    finally:
        conn.close()
    result = runner.invoke(cli, args)
    assert "skipped" not in result.output


@pytest.mark.parametrize("args,message", [
    (["--from", "louvre"], "unknown provider 'louvre'; the database has: bk, met, rijks"),
    (["--from", "met", "--to", "nowhere"], "unknown provider 'nowhere'"),
    (["--from", "met", "--model", "clip"], "unknown model 'clip'; the database has: m-4, m-8"),
    (["--from", "met", "--k", "0"], "k must be a whole number from 1"),
])
def test_errors_exit_1_and_write_nothing(db, args, message):
    before = file_hashes(db)
    result = CliRunner().invoke(cli, ["links", str(db), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert file_hashes(db) == before


def test_a_model_without_records_under_a_provider_says_so(db, tmp_path):
    write_parquet(tmp_path / "only.parquet", make_records(n=3, providers=("louvre",), models={"m-2": 2}))
    loader.load(str(db), [str(tmp_path / "only.parquet")])
    before = file_hashes(db)
    result = CliRunner().invoke(cli, ["links", str(db), "--from", "met", "--to", "louvre", "--model", "m-8"])
    assert result.exit_code == 1
    assert "model 'm-8' has no records under provider 'louvre'" in result.output
    assert file_hashes(db) == before


def test_plan_errors_are_domain_errors(db):
    conn = connect(str(db), readonly=True)
    try:
        with pytest.raises(NotFoundError):
            links.plan(conn, "nope")
        with pytest.raises(InvalidRequestError):
            links.plan(conn, "met", level="object")
    finally:
        conn.close()
