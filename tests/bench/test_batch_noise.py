"""bench/batch_noise.py on the shipped models: batching moves the latents by less than streaming.LATENT_RTOL."""

import pytest
from batch_noise import latent_noise, load_items, speed
from testdata import needs_corpus

from vqtok.tokenizer import load_tokenizer, streaming
from vqtok.tokenizer.checkpoint import tokenizer_file


@needs_corpus  # the bench reads ../shared/data itself
@pytest.mark.parametrize("name, n", [("speech-16k", 3), ("mnist", 40)])
def test_batched_latents_stay_within_the_bound_and_codes_equal_alone(name, n):
    tok = load_tokenizer(tokenizer_file(name))
    items = load_items(tok, n)
    windows, _ = streaming.item_windows(tok, items)
    rtol = streaming.LATENT_RTOL["cpu"]
    noise = latent_noise(tok, windows, 8, rtol)
    assert noise["frames"] == (len(windows) * 49 if name == "mnist" else sum(w.shape[-1] // tok.hop for w in windows))
    assert 0 < noise["max"] < rtol / 2  # measured 1.4e-6 at most: the bound keeps a margin
    result = speed(tok, items, 8)
    assert result["equal"]  # encode_batch gives each item its alone codes
