"""Device choice and the DDP set-up around it (vqtok/device.py, vqtok/run.py), checked without a GPU."""

import inspect

import pytest
import torch
import torch.distributed as dist

from vqtok import run
from vqtok.device import pick_device
from vqtok.errors import VqtokError


def test_vqtok_device_names_what_auto_means(monkeypatch):
    monkeypatch.setenv("VQTOK_DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cpu")  # a GPU machine kept on the CPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("VQTOK_DEVICE", "auto")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("auto") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda", 1)  # no index: this rank's GPU, as 'auto' gives
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # two ranks on a one-GPU machine: no NCCL hang
    with pytest.raises(VqtokError, match=r"LOCAL_RANK asks for GPU 1, but this machine has 1: .*--nproc_per_node=1"):
        pick_device("auto")
    with pytest.raises(VqtokError, match="cuda:3 asks for GPU 3"):
        pick_device("cuda:3")
    monkeypatch.setenv("VQTOK_DEVICE", "tpu")
    with pytest.raises(VqtokError, match="unknown device 'tpu'"):
        pick_device("auto")


def test_a_cpu_run_talks_gloo_even_where_cuda_is_present(monkeypatch):
    backends = []
    monkeypatch.setenv("VQTOK_DEVICE", "auto")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(backends))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: backends.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    run.init_distributed("cpu")
    backends_cpu = list(backends)
    backends.clear()
    run.init_distributed("auto")
    assert backends_cpu == ["gloo"] and backends == ["nccl"]


@pytest.mark.parametrize("keyword", ["forward_sync_buffers", "broadcast_buffers"])
def test_ddp_wrap_turns_off_the_per_forward_buffer_sync_under_either_torch_name(monkeypatch, keyword):
    seen = {}

    def init(self, module, device_ids=None, **kwargs):  # torch 2.13 has forward_sync_buffers, 2.11 not
        seen.update(kwargs, device_ids=device_ids)

    init.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                            for n in ("self", "module", "device_ids", keyword)])
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", type("DDP", (), {"__init__": init}))
    run.ddp_wrap(torch.nn.Linear(2, 2), torch.device("cpu"), sync_buffers=False)
    assert seen == {keyword: False, "device_ids": None}
