"""The CUDA paths, on a machine with a GPU (skipped elsewhere; bench/gpu_check.sh runs them).

The rest of the suite keeps 'auto' on the CPU (conftest.py): its claims are bit-exact CPU claims. Here the
claims are the ones that hold across devices: training under bf16 autocast learns and saves a tokenizer that
loads on the CPU, quantizer distances stay fp32 under autocast, and the CLI's CUDA codes match the CPU's.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from testdata import SHARED_DATA
from vqtok.cli import main
from vqtok.tokenizer.checkpoint import load_tokenizer
from vqtok.tokenizer.quantizer import QuantizerConfig, VectorQuantizer
from vqtok.tokenizer.recipe import load_recipe
from vqtok.tokenizer.train import train_tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REPO = Path(__file__).resolve().parents[1]
MNIST = SHARED_DATA / "mnist"
SPEECH = SHARED_DATA / "speech" / "test" / "librispeech-test-other" / "1688-142285-0000.flac"


def test_training_on_cuda_under_bf16_autocast_learns_and_saves_a_cpu_loadable_tokenizer(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "debug.yaml", [
        f"data.root={MNIST}", "train.device=cuda", "train.precision=bf16", "train.max_steps=40",
        "train.log_every=10", "train.valid_every=40"])
    model = train_tokenizer(recipe, tmp_path / "run", progress=False)
    assert next(model.parameters()).device.type == "cuda"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 4 and train[-1]["mse"] < train[0]["mse"]
    saved = load_tokenizer(tmp_path / "run" / "tokenizer.safetensors")
    assert next(saved.parameters()).device.type == "cpu"
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        on_cpu = saved.encode(x)
        on_gpu = model.encode(x.cuda()).cpu()
    # the same weights in fp32 on two devices (cuDNN may use TF32 convolutions): nearly every code agrees
    assert (on_cpu == on_gpu).float().mean() > 0.9


def test_quantizer_distances_stay_fp32_under_cuda_autocast():
    vq = VectorQuantizer(64, 16, QuantizerConfig()).cuda().train()
    x = torch.randn(256, 16, device="cuda")
    vq(x)
    vq.eval()
    ref = torch.cdist(x.double(), vq.codebook.double()).argmin(1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = vq(x)
    assert out.codes.dtype == torch.int64 and out.quantized.dtype == torch.float32
    assert torch.equal(out.codes, ref)


def test_cli_encode_on_cuda_matches_the_cpu_codes(tmp_path):
    cli = CliRunner()
    wav, rate = sf.read(SPEECH, dtype="float32")
    sf.write(tmp_path / "a.wav", wav[: 4 * rate], rate)
    for device in ("cpu", "cuda"):
        res = cli.invoke(main, ["encode", str(tmp_path / "a.wav"), "-m", "speech-16k", "--device", device,
                                "-o", str(tmp_path / f"{device}.npy")], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    cpu, gpu = np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "cuda.npy")
    assert cpu.shape == gpu.shape and (cpu == gpu).mean() > 0.9
    res = cli.invoke(main, ["decode", str(tmp_path / "cuda.npy"), "--device", "cuda", "-o", str(tmp_path / "b.wav")],
                     catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sf.info(tmp_path / "b.wav").frames == 4 * rate
