"""List the Met -> Brooklyn MiniLM links that demo/judgements.csv judges (the draw, not the verdicts).

For every Met title its five most similar Brooklyn texts (cosine similarity of the
shipped vectors); from the rank-1 links up to 12 drawn at random (seed 13) in each
similarity band of 0.05, plus up to 2 rank 2-5 links per band.  Prints one tab-separated
line per link, lowest similarity first: number, similarity, rank, the two depiction ids
and the two texts with [maker, date].  The verdicts were then written by hand.

    python demo/list_link_candidates.py > candidates.tsv
"""
import pathlib

import numpy as np
import pyarrow.parquet as pq

DATA = pathlib.Path(__file__).resolve().parent / "data"


def unit_rows(name):
    rows = pq.read_table(DATA / name).to_pylist()
    x = np.array([r["embeddings"] for r in rows], dtype=np.float32)
    return rows, x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    met, m = unit_rows("met-titles.parquet")
    bro, b = unit_rows("brooklyn-texts.parquet")
    scores = m @ b.T
    top = np.argsort(-scores, axis=1)[:, :5]
    links = [(float(scores[i, j]), rank + 1, i, j) for i in range(len(met)) for rank, j in enumerate(top[i])]
    rng = np.random.default_rng(13)
    edges = [0.0] + [round(0.30 + 0.05 * k, 2) for k in range(14)] + [1.01]
    chosen = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        firsts = [n for n, link in enumerate(links) if lo <= link[0] < hi and link[1] == 1]
        others = [n for n, link in enumerate(links) if lo <= link[0] < hi and link[1] > 1]
        for pool, size in ((firsts, 12), (others, 2)):
            if pool:
                chosen += [links[n] for n in rng.choice(pool, size=min(len(pool), size), replace=False)]
    chosen.sort()
    for n, (similarity, rank, i, j) in enumerate(chosen, 1):
        a, c = dict(met[i]["attributes"]), dict(bro[j]["attributes"])
        print(
            f"{n}\t{similarity:.3f}\tr{rank}\t{met[i]['depiction_id']}\t{bro[j]['depiction_id']}\t"
            f"{a.get('text')} [{a.get('creator', '')}, {a.get('date', '')}]\t{c.get('text')} [{c.get('creator', '')}, {c.get('date', '')}]"
        )


if __name__ == "__main__":
    main()
