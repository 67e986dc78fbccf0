"""Weights on disk: reading, writing, converting and downloading.

    safetensors.py  the safetensors container: a checked header parser, mmap'd reads, streamed writes
    format.py       minriff's converted file (three components + configs + tokenizer in metadata):
                    `load_models`, `find_weights`, `WeightsFile`
    convert.py      diffusers folders and LDM single files -> minriff's file
    torchpickle.py  torch .bin/.ckpt/.pt through a restricted unpickler (no code runs)
    sniff.py        which container a file is (safetensors, torch zip, legacy pickle), by its structure
    download.py     riffusion/riffusion-model-v1 from the Hugging Face Hub (staging folder, resume, sha256)
    hub.py          the Hugging Face conventions: HF_ENDPOINT, HF_TOKEN, offline switches, the hub cache
    firstrun.py     `ensure_weights`: found, else converted from the HF cache, else downloaded once
    taesd.py        TAESD's own small file: convert (diffusers folder or the original .pth pair),
                    load, find beside the main file, download madebyollin/taesd
    lora.py         LoRA files (kohya-ss, diffusers/PEFT, older diffusers): read, check, resolve to layers
    lora_names.py   the layers a LoRA may target and their kohya / LDM names (from minriff's own models)

Imports run one way: weights uses models (to build and fill them), never the pipeline.
"""
from minriff.models.init import random_models  # noqa: F401  (kept here too: README's older spelling)
from minriff.weights.format import (  # noqa: F401
    COMPONENTS,
    FORMAT,
    WeightsFile,
    compute_dtype,
    find_weights,
    load_component,
    load_models,
    write_random,
)
from minriff.weights.safetensors import SafetensorsFile, write_safetensors  # noqa: F401
