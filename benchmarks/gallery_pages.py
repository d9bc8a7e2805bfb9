"""Gallery page latency on 1,000,000 records (keyset pagination over the schema's indexes).

    .venv/bin/python benchmarks/gallery_pages.py [/tmp/gallery_1m.db]

Builds (once) a records table of 1M rows over 10 providers and 2 models with 0.1% text
records, then times the first page and a page deep in the collection for each kind of
filter.  Vectors are not needed: the gallery never reads them.
"""
from __future__ import annotations

import os
import sys
import time

from datasette_embeddings.web import gallery
from datasette_embeddings.storage.connection import connect
from datasette_embeddings.storage.store import Store

N = 1_000_000


def build(path: str) -> None:
    conn = connect(path)
    Store(conn).migrate()
    conn.execute("begin")
    conn.execute(
        f"""insert into records (id, provider, depiction_id, subject_id, model, created, attributes)
        with recursive n(i) as (select 1 union all select i + 1 from n where i < {N})
        select i, 'p' || (i % 10), 'd' || i, 's' || (i / 2), case when i % 2 then 'm-a' else 'm-b' end, 0,
          json_object('type', case when i % 1000 = 0 then 'text' else 'image' end,
                      'preview', 'https://example.org/' || i || '.jpg', 'subject_title', 'Object ' || i)
        from n"""
    )
    conn.execute(
        f"insert into models (label, vec_table, dimensions, record_count) values "
        f"('m-a', 'vec_a', 8, {N // 2}), ('m-b', 'vec_b', 8, {N // 2})"
    )
    conn.execute("commit")
    conn.close()


def main(path: str) -> None:
    if not os.path.exists(path):
        build(path)
    conn = connect(path)
    started = time.perf_counter()
    gallery.facet_counts(conn, "bench")
    print(f"facet counts (first request, then cached): {time.perf_counter() - started:.3f} s")
    filters = [
        gallery.GalleryFilter(),
        gallery.GalleryFilter(providers=("p3",)),
        gallery.GalleryFilter(providers=("p3", "p7"), model="m-a"),
        gallery.GalleryFilter(type="text"),
        gallery.GalleryFilter(model="m-b"),
        gallery.GalleryFilter(type="text", providers=("p0",)),
    ]
    for flt in filters:
        for after in (0, N * 9 // 10):
            started = time.perf_counter()
            page = gallery.gallery_page(conn, flt, after=after, size=48, base_url="/db/-/gallery", cache_key="bench")
            ms = (time.perf_counter() - started) * 1000
            print(f"{flt!s:75} after={after:>7}  {len(page['items'])} items  {ms:6.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gallery_1m.db")
