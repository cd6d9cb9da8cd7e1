"""The Ray Data integration on a local Ray: the same codes as `vqtok encode`, in files vqtok's readers take."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from vqtok.cli import main
from vqtok.tokenizer.codes import read_codes

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'vqtok[ray]')")
pytest.importorskip("pyarrow")
from vqtok.integrations.ray import RayEncoder  # noqa: E402  (needs pyarrow)
from vqtok.data.parquet import CodesParquet  # noqa: E402


@pytest.mark.slow
def test_ray_map_batches_gives_the_clis_codes(tmp_path, fsdd_root):
    src = tmp_path / "clips"
    src.mkdir()
    for path in sorted(fsdd_root.glob("*.wav"))[::250]:
        shutil.copy(path, src / path.name)
    (src / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    res = CliRunner().invoke(main, ["encode", str(src), "-m", "fsdd", "-o", str(tmp_path / "cli"), "--labels", "none",
                                    "--quiet"])
    assert res.exit_code == 1 and "broken.wav" in res.stderr  # the CLI skips it; so does Ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        files = ray.data.read_binary_files(str(src), include_paths=True)
        codes = files.map_batches(RayEncoder, fn_constructor_kwargs={"model": "fsdd", "root": str(src)},
                                  compute=ray.data.ActorPoolStrategy(size=1), batch_size=4,
                                  batch_format="pyarrow")  # the other CPU reads
        codes.write_parquet(str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    rows = list(CodesParquet(tmp_path / "ray"))
    assert sorted(r.meta["id"] for r in rows) == sorted(p.name for p in src.glob("*.wav") if p.name != "broken.wav")
    for row in rows:
        ref = read_codes(tmp_path / "cli" / row.meta["id"].replace(".wav", ".npy"))
        assert np.array_equal(row.levels[0], ref.levels[0]), row.meta["id"]
        assert row.source["length"] == ref.source["length"] and row.source.get("gain_db") == ref.source.get("gain_db")
