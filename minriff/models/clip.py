"""CLIP text encoder (the ViT-L/14 text transformer of Stable Diffusion v1.x), on minriff.kernels.

    ids (B, T) ─ token + position embeddings ─> (B, T, C)
               ─ N × [x + attn(LN1(x)) with a causal mask;  x + mlp(LN2(x))]   (pre-LN)
               ─ final LayerNorm ─> last hidden state (B, T, C)  — the UNet's conditioning

Attribute paths equal the transformers state-dict keys (`text_model.encoder.layers.0.self_attn.q_proj.weight`).
"""
from __future__ import annotations

import numpy as np

from minriff import kernels
from minriff.configs import CLIPTextConfig
from minriff.errors import InputError
from minriff.models import nn


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def __call__(self, ids):  # (B, T) int -> (B, T, C)
        T = ids.shape[1]
        x = self.token_embedding(ids)  # (B, T, C) in the activation dtype
        x += self.position_embedding.weight[None, :T]  # (float16 positions widen as they are added)
        return x


class CLIPAttention(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        C = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.q_proj = nn.Linear(C, C)
        self.k_proj = nn.Linear(C, C)
        self.v_proj = nn.Linear(C, C)
        self.out_proj = nn.Linear(C, C)

    def __call__(self, x):  # (B, T, C) -> (B, T, C)
        q = nn.split_heads(self.q_proj(x), self.heads)  # (B, H, T, D)
        k = nn.split_heads(self.k_proj(x), self.heads)
        v = nn.split_heads(self.v_proj(x), self.heads)
        y = kernels.ops().attention(q, k, v, causal=True)  # scale 1/sqrt(D)
        return self.out_proj(nn.merge_heads(y))


class CLIPMLP(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = cfg.hidden_act  # "quick_gelu" (SD v1.x) or "gelu" (erf form)

    def __call__(self, x):  # (B, T, C) -> (B, T, C)
        h = self.fc1(x)  # (B, T, intermediate)
        return self.fc2(getattr(kernels.ops(), self.act)(h))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        self.self_attn = CLIPAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def __call__(self, x):  # (B, T, C) -> (B, T, C)
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        self.layers = [CLIPEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)


class CLIPTextModel(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        self.config = cfg
        self.text_model = CLIPTextTransformer(cfg)

    def hidden_states(self, ids) -> list:
        """[embeddings, after layer 1, ..., after layer N] (each (B, T, C)), before the final LayerNorm."""
        F = kernels.ops()
        ids = F.asarray(self._check_ids(ids))
        x = self.text_model.embeddings(ids)
        states = [x]
        for layer in self.text_model.encoder.layers:
            x = layer(x)
            states.append(x)
        return states

    def __call__(self, ids):  # (B, T) int -> (B, T, C)
        return self.text_model.final_layer_norm(self.hidden_states(ids)[-1])

    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(kernels.ops().to_host(ids))
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"text encoder wants integer token ids of shape (B, T), got {ids.dtype} {ids.shape}")
        cfg = self.config
        if ids.shape[1] > cfg.max_position_embeddings:
            raise InputError(f"text encoder: {ids.shape[1]} tokens exceed "
                             f"max_position_embeddings={cfg.max_position_embeddings}")
        if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            raise InputError(f"text encoder: token ids must lie in [0, {cfg.vocab_size}), "
                             f"got [{ids.min()}, {ids.max()}]")
        return ids.astype(np.int64, copy=False)
