"""What each tensor of a residual block is (γ₁, W_qkv, W₂, …), read from its name in the block.

Fig. 15 of the paper groups the actual learning rate by tensor kind: the two norms' gains
γ₁ and γ₂, the MLP's W₁ and W₂ and the attention weights. The per-tensor LR log names a
tensor by its path inside its block (``attn.qkv.weight``), and ``weyl report`` needs the kind
from the metrics file alone, so the kind is a function of that name. weyl's four families
share one block layout — timm's ViT/Swin blocks and Flatten-Swin's (``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) and weyl's GPT (``ln_1``, ``ln_2`` for the
norms) — which is also what their attention views point at (``view.norm1``/``norm2`` and
``view.extra["qkv"|"proj"|"fc1"|"fc2"]``; tests check the two agree). nanoGPT's names
(``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) are read too.

No torch import: ``weyl report`` uses this without loading torch.
"""

from __future__ import annotations

import re

# The kinds Fig. 15 draws, in panel order, with their panel titles.
FIG15_KINDS: tuple[tuple[str, str], ...] = (
    ("gamma1", "γ₁ (norm before attention)"),
    ("attn_qkv", "W_q, W_k, W_v (fused qkv)"),
    ("attn_proj", "W_o (attention output)"),
    ("gamma2", "γ₂ (norm before MLP)"),
    ("mlp_w1", "W₁ (MLP in)"),
    ("mlp_w2", "W₂ (MLP out)"),
)

# (module path inside the block, kind of its weight); a bias is "<kind>_bias", a norm's bias β.
_MODULE_KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (r"^(norm1|ln_1|ln1)$", "gamma1"),
        (r"^(norm2|ln_2|ln2)$", "gamma2"),
        (r"^attn\.(qkv|c_attn)$", "attn_qkv"),
        (r"^attn\.(proj|c_proj)$", "attn_proj"),
        (r"^mlp\.(fc1|c_fc)$", "mlp_w1"),
        (r"^mlp\.(fc2|c_proj)$", "mlp_w2"),
    )
)


def tensor_kind(name: str) -> str:
    """The kind of the tensor at ``name`` inside a block (``attn.qkv.weight`` → ``attn_qkv``).

    ``gamma1``/``beta1``, ``gamma2``/``beta2``, ``attn_qkv``, ``attn_proj``, ``mlp_w1``,
    ``mlp_w2``, their biases as ``<kind>_bias``, and ``other`` for anything else (relative
    position tables, σReparam's γ, Flatten's depthwise conv and scale).
    """
    module, _, leaf = name.rpartition(".")
    for pattern, kind in _MODULE_KINDS:
        if pattern.match(module):
            if leaf == "weight":
                return kind
            if leaf == "bias":
                return kind.replace("gamma", "beta") if kind.startswith("gamma") else kind + "_bias"
    return "other"
