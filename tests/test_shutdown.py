"""``datasette ... --get`` exits cleanly after a torch model ran (issue 12, "Also").

The one request is answered while the startup warm-up is still inside torch; a daemon
thread in torch when Python finalises aborted the process with exit code 134
("terminate called without an active exception") in two runs of three.
"""
import json
import os
import subprocess
import sys

import pytest

from datasette_embeddings.files import loader
from tests import tiny_clip
from tests.helpers import make_records, write_parquet

pytest.importorskip("llm_clip")


def test_get_after_a_torch_model_exits_zero(tmp_path):
    tiny_clip.stage(os.environ["HF_HOME"])
    write_parquet(tmp_path / "x.parquet", make_records(n=5, models={"clip-ViT-B-32": 512}))
    loader.load(str(tmp_path / "x.db"), [str(tmp_path / "x.parquet")])
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"plugins": {"datasette-embeddings": {"models": {"clip-ViT-B-32": "clip"}}}}))
    exe = os.path.join(os.path.dirname(sys.executable), "datasette")
    path = "/x.json?sql=select+length(embed_text('clip-ViT-B-32','a+ship'))+as+n&_shape=array"
    for _ in range(3):
        result = subprocess.run([exe, str(tmp_path / "x.db"), "-m", str(metadata), "--get", path],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (result.returncode, result.stderr[-800:])
        assert json.loads(result.stdout) == [{"n": 64}]
