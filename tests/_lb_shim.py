"""What the `languagebind` package's code needs to run correctly under transformers 5.x (test oracle only).

Three patches, each only where needed (under transformers 4.x none applies): `shim_modules` (the causal mask),
`repair_from_pretrained` (after `from_pretrained`), `skip_processor_init_check` (building its processors).

transformers 5 dropped `causal_attention_mask` from `CLIPAttention.forward` (it
now lands in `**kwargs` and is ignored), so the package's text tower would silently attend to later tokens.
`shim_modules` gives the oracle's model modules (never transformers itself) a `CLIPAttention` subclass that adds
the causal mask to the padding mask as transformers 4.x did. Under 4.x nothing is patched.
"""

from __future__ import annotations

import inspect
import types


def needs_causal_mask_shim() -> bool:
    from transformers.models.clip.modeling_clip import CLIPAttention

    return "causal_attention_mask" not in inspect.signature(CLIPAttention.forward).parameters


def shim_modules(*modules: types.ModuleType) -> list[str]:
    """Patch the oracle's modeling modules in place; returns what was patched (empty under transformers 4.x)."""
    if not needs_causal_mask_shim():
        return []
    from transformers.models.clip.modeling_clip import CLIPAttention

    class CausalCLIPAttention(CLIPAttention):
        def forward(self, hidden_states, attention_mask=None, causal_attention_mask=None, output_attentions=False,
                    **kwargs):
            if causal_attention_mask is not None:  # as transformers 4.x's CLIPAttention: both masks are additive
                attention_mask = (causal_attention_mask if attention_mask is None
                                  else attention_mask + causal_attention_mask)
            return super().forward(hidden_states, attention_mask=attention_mask, **kwargs)

    for module in modules:
        module.CLIPAttention = CausalCLIPAttention
    return [f"{m.__name__}.CLIPAttention" for m in modules]


def repair_from_pretrained(model, folder) -> list[str]:
    """After the package's `from_pretrained` under transformers 5: it builds the model on the meta device, then
    (a) re-initialises the text embeddings' loaded weights (token and position embeddings come back random) and
    (b) leaves the non-persistent `position_ids` buffers uninitialised (garbage indices). So the checkpoint's
    tensors are copied in again with torch's own `load_state_dict`, and every `position_ids` buffer is set to
    0, 1, 2, ... as the constructors do. Under 4.x both are no-ops. Returns the names of the tensors it changed."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    before = model.state_dict()
    changed = [k for k, v in state.items() if k in before and not torch.equal(before[k], v)]
    model.load_state_dict(state, strict=False)
    for module in model.modules():
        ids = getattr(module, "position_ids", None)
        if isinstance(ids, torch.Tensor):
            want = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
            if not torch.equal(ids, want):
                changed.append(f"{type(module).__name__}.position_ids")
                ids.copy_(want)
    return changed


def skip_processor_init_check(monkeypatch) -> bool:
    """transformers 5's `ProcessorMixin.__init__` insists on its declared sub-processors, which the package's
    processors (declaring none, passing none) never give: for this test, their `super().__init__()` does nothing,
    as under 4.x (where it only stored the absent sub-processors). Returns whether it patched."""
    import transformers
    from transformers import ProcessorMixin

    if int(transformers.__version__.split(".")[0]) < 5:
        return False
    monkeypatch.setattr(ProcessorMixin, "__init__", lambda self, *args, **kwargs: None)
    return True
