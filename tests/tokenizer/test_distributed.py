"""Two gloo processes on CPU hold the same codebook as one process on the concatenated batch."""

import traceback

import torch

from vqtok.tokenizer.quantizer import QuantizerConfig, VectorQuantizer

K, D, STEPS, PER_RANK = 32, 8, 4, 96


def batches(step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(2 * PER_RANK, D, generator=gen) * 2 + torch.randn(1, D, generator=gen)


def run_steps(vq: VectorQuantizer, rank: int | None, starve: bool = False) -> None:
    for step in range(STEPS):
        x = batches(step)
        if rank is not None:
            x = x[rank * PER_RANK : (rank + 1) * PER_RANK]
        if starve and step == 1:  # force revival on the next step
            vq.cluster_size[: K // 2] = 0.0
        vq(x)


def worker(rank: int, init_file: str, out_file: str, revival: bool) -> None:
    try:
        import torch.distributed as dist
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                                timeout=__import__("datetime").timedelta(seconds=60))
        torch.manual_seed(rank)  # different local RNG: revival must still agree across ranks
        cfg = QuantizerConfig(decay=0.8) if revival else QuantizerConfig(decay=0.8, dead_ratio=0.0, dead_floor=0.0)
        vq = VectorQuantizer(K, D, cfg).train()
        run_steps(vq, rank, starve=revival)
        torch.save({k: v.clone() for k, v in vq.state_dict().items()}, out_file)
        dist.destroy_process_group()
    except BaseException:
        traceback.print_exc()
        raise


def run_two_ranks(tmp_path, revival: bool, spawn_ranks) -> list[dict]:
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    init = str(tmp_path / "init")
    spawn_ranks(worker, [(r, init, outs[r], revival) for r in range(2)], timeout=600)
    return [torch.load(o, weights_only=True) for o in outs]


def test_two_processes_equal_one_process_on_concatenated_batch(tmp_path, spawn_ranks):
    ranks = run_two_ranks(tmp_path, revival=False, spawn_ranks=spawn_ranks)
    single = VectorQuantizer(K, D, QuantizerConfig(decay=0.8, dead_ratio=0.0, dead_floor=0.0)).train()
    run_steps(single, None)
    for name in ("codebook", "cluster_size", "embed_sum"):
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], single.state_dict()[name], rtol=1e-5, atol=1e-5)


def test_revival_is_identical_on_every_rank(tmp_path, spawn_ranks):
    ranks = run_two_ranks(tmp_path, revival=True, spawn_ranks=spawn_ranks)
    for name in ("codebook", "cluster_size", "embed_sum"):
        assert torch.equal(ranks[0][name], ranks[1][name]), name
