"""Ray Data batch inference: one tokenizer per actor turns batches of audio or image files into code columns.

The common pattern for a corpus larger than one machine (Ray's batch inference: a model per actor,
`map_batches`, Parquet out)::

    import ray
    from vqtok.integrations.ray import RayEncoder

    ray.init()                                    # or ray.init(address="auto") on a cluster
    files = ray.data.read_binary_files("s3://bucket/speech/", include_paths=True)
    codes = files.map_batches(RayEncoder, fn_constructor_kwargs={"model": "speech-16k", "root": "bucket/speech"},
                              compute=ray.data.ActorPoolStrategy(size=8), batch_size=16, batch_format="pyarrow")
    codes.write_parquet("s3://bucket/speech-codes/")

Each output row has the columns of vqtok's Parquet format (vqtok/data/parquet.py), with the same codes as
`vqtok encode` gives the same file: the bytes are written to a temporary file with the input's extension and
read by the same Codec. The batches carry the format's schema with its metadata, which Ray's writer keeps, so
`CodesParquet`, `TokenDataset` and `datasets` read the output as they read `vqtok encode --format parquet`'s
(rows in Ray's order; ids say which input each is). A file that cannot be encoded is logged on one line and
left out.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from vqtok.codec import Codec
from vqtok.device import pick_device
from vqtok.errors import VqtokError
from vqtok.data.parquet import codes_type, dataset_metadata, item_row, rows_table, schema
from vqtok.tokenizer.checkpoint import load_tokenizer
from vqtok.tokenizer.codes import tokenizer_location, tokenizer_summary

logger = logging.getLogger(__name__)


class RayEncoder:
    """A callable class for `ray.data.Dataset.map_batches`: a batch with `bytes` and `path` columns (what
    `read_binary_files(..., include_paths=True)` gives) to a pyarrow table of code rows.

    `model`: a shipped name or tokenizer file; `root`: the prefix taken off each path to make its id (default:
    the path as given); `threads`: torch threads per actor; the rest as `vqtok encode`'s options.
    """

    def __init__(self, model: str | os.PathLike, root: str | None = None, device: str = "cpu", threads: int = 1,
                 at_level: bool = True, chunk_seconds: float | None = 10.0, batch_size: int = 1):
        torch.set_num_threads(threads)
        tok = load_tokenizer(model, pick_device(device))
        self.codec = Codec(tok, at_level=at_level, chunk_seconds=chunk_seconds, batch_size=batch_size)
        self.root = None if root is None else PurePosixPath(root)
        self.record = {**tokenizer_summary(tok), **tokenizer_location(tok)}
        self.schema = schema(codes_type(self.record), dataset_metadata(self.record))
        # a RAM-backed folder where there is one: each input passes through it once
        self.scratch = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

    def key(self, path: str) -> str:
        p = PurePosixPath(path)
        if self.root is not None:
            try:
                return p.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return p.as_posix()

    def __call__(self, batch) -> Any:
        columns = batch.to_pydict() if hasattr(batch, "to_pydict") else batch
        prepared, keys = [], []
        # Every input is read by the CLI's own route (Codec.open on a file) from a temporary copy of its bytes,
        # kept until the batch is encoded: a long file is read as it is encoded.
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            for n, (data, path) in enumerate(zip(columns["bytes"], columns["path"])):
                copy = Path(tmp) / f"{n}{PurePosixPath(path).suffix}"
                copy.write_bytes(bytes(data))
                try:
                    item = self.codec.open(copy)
                except VqtokError as err:
                    logger.warning("error: %s", str(err).replace(str(copy), path))
                    continue
                item.source["path"] = path
                prepared.append(item)
                keys.append(self.key(path))
            codes = self.codec.encode(prepared) if prepared else []
        rows = []
        for key, item, c in zip(keys, prepared, codes):
            levels = c if isinstance(c, list) else [c]
            rows.append(item_row(key, [lv.cpu().numpy() for lv in levels], item.source, None))
        return rows_table(rows, self.schema)
