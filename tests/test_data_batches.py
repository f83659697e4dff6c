"""TokenBatches: random windows from the memmap, reproducible, distinct per rank, exact resume.

The data folder is written by hand here (not by the pipeline): token i of train.bin is i itself, so every
window tells where it starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmlab.data import TokenBatches, load_meta

N_TRAIN, N_VAL = 5000, 300


def write_data_dir(d: Path, n_train: int = N_TRAIN, n_val: int = N_VAL) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    np.arange(n_train, dtype=np.uint16).tofile(d / "train.bin")
    (np.arange(n_val, dtype=np.uint16) + 10_000).tofile(d / "val.bin")
    meta = {
        "tokenizer": "char",
        "fingerprint": "f" * 64,
        "vocab_size": 20_000,
        "dtype": "uint16",
        "train_tokens": n_train,
        "val_tokens": n_val,
        "train_bytes": n_train,
        "val_bytes": n_val,
        "source": "test",
        "split": "tail",
        "val_fraction": 0.1,
        "seed": 0,
        "eot_token": 19_999,
        "format_version": 1,
    }
    (d / "meta.json").write_text(json.dumps(meta))
    return d


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_data_dir(tmp_path / "data")


def test_windows_are_consecutive_tokens_from_the_file(data_dir):
    tb = TokenBatches(data_dir, "train", block_size=16, batch_size=8, seed=1)
    assert isinstance(tb.data, np.memmap) and len(tb) == N_TRAIN
    starts = []
    for _ in range(50):
        x, y = tb.next()
        assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
        s = x[:, :1]  # token value == position
        assert torch.equal(x, s + torch.arange(16)) and torch.equal(y, x + 1)
        starts += s.flatten().tolist()
    assert min(starts) >= 0 and max(starts) <= N_TRAIN - 17  # y's last token is still inside the file
    assert len(set(starts)) > 300  # spread over the file, not a few fixed windows
    x, y = TokenBatches(data_dir, "val", block_size=299, batch_size=4).next()  # the longest window fits exactly
    assert torch.equal(x[:, 0], torch.full((4,), 10_000)) and y[0, -1].item() == 10_299


def test_reproducible_distinct_per_seed_and_rank(data_dir):
    def take(n, **kw):
        tb = TokenBatches(data_dir, "train", block_size=8, batch_size=4, **kw)
        return [tb.next()[0] for _ in range(n)]

    a = take(5, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a, take(5, seed=3)))
    assert not any(torch.equal(p, q) for p, q in zip(a, take(5, seed=4)))
    r0 = take(5, seed=3, rank=0, world_size=2)
    r1 = take(5, seed=3, rank=1, world_size=2)
    assert not any(torch.equal(p, q) for p, q in zip(r0, r1))


def test_state_dict_resumes_exactly_and_per_rank(data_dir):
    kw = dict(block_size=8, batch_size=4, seed=5, world_size=2)
    full = TokenBatches(data_dir, "train", rank=0, **kw)
    for _ in range(3):
        full.next()
    state = full.state_dict()
    assert all(isinstance(v, int) for v in state.values())  # plain ints: fits in a weights_only checkpoint
    expected = [full.next() for _ in range(3)]
    resumed = TokenBatches(data_dir, "train", rank=0, **kw)
    resumed.load_state_dict(state)
    for (x, y), (ex, ey) in zip([resumed.next() for _ in range(3)], expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    # rank 1 given rank 0's (saved) state continues rank 1's own stream, not a copy of rank 0's
    other = TokenBatches(data_dir, "train", rank=1, **kw)
    uninterrupted = TokenBatches(data_dir, "train", rank=1, **kw)
    for _ in range(3):
        uninterrupted.next()
    other.load_state_dict(state)
    assert torch.equal(other.next()[0], uninterrupted.next()[0])
    assert not torch.equal(other.next()[0], expected[1][0])
    with pytest.warns(UserWarning, match="different batch_size"):
        TokenBatches(data_dir, "train", rank=0, block_size=8, batch_size=2, seed=5, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="not a TokenBatches state"):
        resumed.load_state_dict({"iter": 3})


def test_eval_batches_are_fixed_and_leave_the_stream_alone(data_dir):
    tb = TokenBatches(data_dir, "val", block_size=8, batch_size=4, seed=2)
    first = [x for x, _ in tb.eval_batches(3)]
    tb.next()
    again = [x for x, _ in tb.eval_batches(3)]
    assert all(torch.equal(p, q) for p, q in zip(first, again)) and tb.step == 1


def test_sequential_batches_cover_every_target_once(data_dir):
    tb = TokenBatches(data_dir, "val", block_size=32, batch_size=3)
    xs, ys = zip(*tb.sequential_batches())
    x, y = torch.cat(xs), torch.cat(ys)
    kept = y != -1
    assert torch.equal(y[kept], torch.arange(10_001, 10_000 + N_VAL))  # targets 1..N-1, in order, once
    assert torch.equal(x[kept], torch.arange(10_000, 10_000 + N_VAL - 1))
    assert len(list(tb.sequential_batches(max_batches=2))) == 2


def test_bad_arguments(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"val.bin holds 300 tokens, fewer than block_size \+ 1 = 301"):
        TokenBatches(data_dir, "val", block_size=300, batch_size=2)
    with pytest.raises(ValueError, match="split='test' is not valid"):
        TokenBatches(data_dir, "test", block_size=8, batch_size=2)
    with pytest.raises(ValueError, match="batch_size=0 is not valid"):
        TokenBatches(data_dir, "train", block_size=8, batch_size=0)
    with pytest.raises(ValueError, match="rank=2 is not valid for world_size=2"):
        TokenBatches(data_dir, "train", block_size=8, batch_size=2, rank=2, world_size=2)
    meta = json.loads((data_dir / "meta.json").read_text())
    meta.update(vocab_size=70_000)  # uint16 cannot hold such ids
    (data_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="dtype 'uint16' does not fit vocab_size 70000"):
        load_meta(data_dir)
    with pytest.raises(FileNotFoundError, match=r"folder does not exist.*llmlab prepare --out"):
        TokenBatches(tmp_path / "nowhere", "train", block_size=8, batch_size=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_match_cpu(data_dir):
    cpu = TokenBatches(data_dir, "train", block_size=64, batch_size=8, seed=9)
    gpu = TokenBatches(data_dir, "train", block_size=64, batch_size=8, seed=9, device="cuda")
    for _ in range(3):
        (cx, cy), (gx, gy) = cpu.next(), gpu.next()
        assert gx.is_cuda and torch.equal(gx.cpu(), cx) and torch.equal(gy.cpu(), cy)
