"""What the `languagebind` package's model code needs to run under transformers 5.x (test oracle only).

One patch, only where needed: transformers 5 dropped `causal_attention_mask` from `CLIPAttention.forward` (it
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
