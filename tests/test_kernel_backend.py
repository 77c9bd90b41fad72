"""`TRIERGON_KERNELS=auto` decides per op and shape from the table of GPU measurements, and only there."""

from __future__ import annotations

import logging

import pytest
import torch

from triergon.kernels import attention as attn
from triergon.kernels import backend


@pytest.fixture
def compiled_triton(monkeypatch):
    """As if Triton could run compiled here (a GPU), without one: the decision alone is under test."""
    monkeypatch.setattr(backend, "triton_unavailable_reason", lambda x: None)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(backend.ENV, "auto")
    backend._log_fallback.cache_clear()


def test_auto_takes_the_pytorch_path_where_nothing_was_measured(compiled_triton, caplog):
    assert backend.TRITON_FASTER == {}  # no GPU figure yet (benchmarks/RESULTS.md)
    x = torch.zeros(1)
    with caplog.at_level(logging.INFO, logger=backend.__name__):
        for op in ("attention", "snake_beta", "attention"):
            assert not backend.use_triton(op, x, {"q_len": 1292})
    messages = [r.getMessage() for r in caplog.records if r.name == backend.__name__]
    assert len(messages) == 2 and all("no GPU measurement" in m for m in messages), messages


def test_auto_follows_the_measured_table_per_op_and_shape(compiled_triton, monkeypatch):
    monkeypatch.setitem(backend.TRITON_FASTER, "attention", lambda x, shape: shape["k_len"] >= 64)
    x = torch.zeros(1)
    assert backend.use_triton("attention", x, {"k_len": 1292})
    assert not backend.use_triton("attention", x, {"k_len": 8})
    assert not backend.use_triton("snake_beta", x, {"time": 4096})
    monkeypatch.setenv(backend.ENV, "torch")
    assert not backend.use_triton("attention", x, {"k_len": 1292})


def test_attention_passes_its_shape_to_the_switch(monkeypatch):
    seen = []
    monkeypatch.setattr(attn, "use_triton", lambda op, x, shape: seen.append((op, shape)) or False)
    q, k = torch.randn(2, 4, 9, 32), torch.randn(2, 2, 5, 32)
    attn.attention(q, k, k)
    assert seen == [("attention", {"batch": 2, "heads": 4, "kv_heads": 2, "q_len": 9, "k_len": 5, "head_dim": 32})]


def test_interpreter_runs_triton_only_when_asked(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(backend.TRITON_FASTER, "attention", lambda x, shape: True)
    x = torch.zeros(1)
    monkeypatch.setenv(backend.ENV, "auto")
    assert not backend.use_triton("attention", x, {})  # the interpreter is for correctness, never "faster"
    monkeypatch.setenv(backend.ENV, "triton")
    assert backend.use_triton("attention", x, {})


def test_autotune_key_buckets_lengths():
    assert [attn._next_power_of_2(n) for n in (1, 2, 3, 8, 9, 1292, 1293, 2048)] == [1, 2, 4, 8, 16, 2048, 2048, 2048]
    assert attn._tune_keys(1292, 8) == attn._tune_keys(1100, 7) == (2048, 8)
