"""torch.compile traces the models end to end with the default backend switch (auto) on this CPU."""

from __future__ import annotations

import torch

import triergon


def test_fullgraph_compile_of_dit_and_decoder():
    model = triergon.build_model("tiny", seed=0)
    dit = torch.compile(model.dit, fullgraph=True, backend="aot_eager")
    decoder = torch.compile(model.vae.decoder, fullgraph=True, backend="aot_eager")
    x, t, c, g = torch.randn(2, 16, 12), torch.rand(2), torch.randn(2, 8, 64), torch.randn(2, 128)
    with torch.no_grad():
        torch.testing.assert_close(dit(x, t, c, g), model.dit(x, t, c, g))
        z = torch.randn(1, 16, 4)
        torch.testing.assert_close(decoder(z), model.vae.decoder(z))
