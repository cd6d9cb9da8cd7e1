"""Prior layouts as classes: their checkpoint records (and the first format's), the recipe checks they own, what they
ask of the network, and a recipe's `model.network` under its older name `model.kind`."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vqtok import VqtokError, registry
from vqtok.prior.checkpoint import load_prior, save_prior
from vqtok.prior.coding import batchable, prior_fingerprint
from vqtok.prior.layout import LAYOUTS, MapLayout, SequenceLayout, layout_from_record
from vqtok.prior.model import CodePrior
from vqtok.prior.recipe import load_prior_recipe

PIX = {"channels": 8, "layers": 2, "kernel_size": 3}
GPT = {"dim": 16, "layers": 1, "heads": 2, "max_len": 32}
BASE = dict(level="codes", level_index=0, codebook_size=12, num_classes=3, class_counts=[2, 1, 1])


def first_format(path, out) -> None:
    """Rewrite prior file `path` at `out` as the first format wrote it: format version 1, the network under "kind",
    one layout record holding the fields of maps and sequences alike."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    layout = json.loads(meta.pop("layout"))
    meta["kind"] = meta.pop("network")
    layout["kind"] = layout.pop("network")
    meta["layout"] = json.dumps({"shape": None, "eos": False, "max_length": None, "codebooks": 1, "window": None,
                                 "context": None, **layout}, sort_keys=True)
    meta["format_version"] = "1"
    save_file(load_file(str(path)), str(out), metadata=meta)


@pytest.mark.parametrize("layout, config", [
    (MapLayout(network="pixelcnn", shape=[3, 4], **BASE), PIX),
    (SequenceLayout(network="transformer", eos=True, max_length=20, **BASE), GPT),
])
def test_a_first_format_prior_loads_as_it_was_under_the_same_fingerprint(tmp_path, layout, config):
    torch.manual_seed(0)
    prior = CodePrior(layout, config).eval()
    save_prior(prior, tmp_path / "new.safetensors", {"fingerprint": "0" * 16})
    first_format(tmp_path / "new.safetensors", tmp_path / "old.safetensors")
    new, old = load_prior(tmp_path / "new.safetensors"), load_prior(tmp_path / "old.safetensors")
    assert type(old.layout) is type(layout) and old.layout == new.layout == layout
    assert prior_fingerprint([old]) == prior_fingerprint([new]) == prior_fingerprint([prior])


def test_the_shipped_first_format_prior_keeps_its_fingerprint():
    """mnist-prior was written in the first format; the .vqz files coded with it name this fingerprint."""
    path = registry.lookup("mnist-prior", "prior")
    assert registry.header(path)["format_version"] == "1" and "kind" in registry.header(path)
    prior = load_prior(path)
    assert isinstance(prior.layout, MapLayout) and prior.layout.network == "pixelcnn"
    assert prior_fingerprint([prior]) == "59c2d7ab36956e96"


def test_records_name_their_class_and_are_read_strictly():
    lay = SequenceLayout(network="transformer", codebooks=2, window=10, context=4, **BASE)
    record = lay.record()
    assert record["dims"] == 1 and "shape" not in record
    assert layout_from_record(json.loads(json.dumps(record))) == lay
    with pytest.raises(VqtokError, match="unknown key 'shape'"):
        layout_from_record({**record, "shape": [2, 3]})
    first = MapLayout(network="pixelcnn", shape=[2, 3], **BASE).identity()
    assert first["dims"] == 2 and first["kind"] == "pixelcnn" and first["eos"] is False
    assert layout_from_record(first) == MapLayout(network="pixelcnn", shape=[2, 3], **BASE)
    with pytest.raises(VqtokError, match="unknown key 'eos'"):  # a map with an end token is no first-format map
        layout_from_record({**first, "eos": True})
    assert set(LAYOUTS) == {1, 2}


def test_layouts_check_the_recipe_and_ask_the_network():
    with pytest.raises(VqtokError, match="conditioned spatially on the top map: use model.network pixelcnn"):
        MapLayout(network="transformer", shape=[4, 4], **{**BASE, "level": "bottom"})
    with pytest.raises(VqtokError, match="sequences of natural lengths: use model.network transformer"):
        SequenceLayout(network="pixelcnn", **BASE)
    with pytest.raises(VqtokError, match="a multiple of the tokenizer's 2 codebooks \\(got 3\\)"):
        SequenceLayout(network="transformer", codebooks=2, window=10, context=3, **BASE)
    with pytest.raises(VqtokError, match="unknown network 'lstm'; choose one of pixelcnn, transformer"):
        MapLayout(network="lstm", shape=[4, 4], **BASE)
    with pytest.raises(VqtokError, match="multiple of the tokenizer's 1 codebooks"):  # maps are never windowed
        MapLayout.from_codes(torch.zeros(2, 4, 4), torch.full((2,), 16), codebooks=1, context=8, max_len=64,
                             network="pixelcnn", **BASE)
    with pytest.raises(VqtokError, match="needs 21 positions, more than model.config.max_len=20"):
        SequenceLayout.from_codes(torch.zeros(2, 20), torch.tensor([20, 5]), codebooks=1, context=None, max_len=20,
                                  network="transformer", **BASE)
    torch.manual_seed(0)
    maps = CodePrior(MapLayout(network="pixelcnn", shape=[2, 3], **BASE), PIX)
    raster = CodePrior(MapLayout(network="transformer", shape=[2, 3], **BASE), GPT)
    assert batchable([maps]) and not batchable([raster])
    assert "cond_ratio" not in maps.config and raster.config["codebooks"] == 1  # only the network's own fields
    codes = torch.randint(0, 12, (2, 2, 3))
    with torch.no_grad():
        assert raster.eval().logits(codes, torch.tensor([0, 1]), None).shape == (2, 2, 3, 12)


def test_an_older_recipe_names_the_network_model_kind(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("task: prior\nmodel:\n  kind: transformer\n  config: {dim: 16, layers: 1, heads: 2}\n")
    assert load_prior_recipe(path).model.network == "transformer"
    with pytest.raises(VqtokError, match="old.yaml: model.kind is the older name of model.network"):
        load_prior_recipe(path, ["model.network=transformer"])
