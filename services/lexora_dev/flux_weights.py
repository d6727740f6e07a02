"""A tiny, randomly initialised FLUX.1 pipeline for the local stack and the tests.

No FLUX weights can be had offline, yet the ``flux-1-schnell`` Triton model must run the real
diffusers ``FluxPipeline``. This builds one from the real classes -- FluxTransformer2DModel,
AutoencoderKL, CLIPTextModel + CLIPTokenizer, T5EncoderModel + T5TokenizerFast,
FlowMatchEulerDiscreteScheduler -- with FLUX.1-schnell's structure (8x VAE, 2x2 latent packing,
no guidance embedding, schnell's scheduler settings) but a few thousand times fewer parameters,
and saves it with ``save_pretrained`` so that ``FluxPipeline.from_pretrained(path)`` loads it
exactly as it would load the real checkpoint. Both tokenizers are written from vocabularies made
here (nothing is fetched). Weights come from a fixed seed, so every build is the same model.

``ensure_tiny_flux(path)`` is idempotent and atomic: it builds in a temporary sibling directory
and renames it into place, so a concurrent builder or a crash never leaves a half-written
pipeline at ``path``. Run as ``python -m lexora_dev.flux_weights [PATH]`` to build in a separate
process (what the Triton launcher does, keeping torch out of the launcher).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lexora_dev.cache import cache_dir

__all__ = ["RECIPE", "ensure_tiny_flux", "is_complete"]

# Bump when the recipe below changes: the launcher keys its cache directory on it.
RECIPE = "tiny-flux-v1"
MARKER = "lexora-tiny-flux.json"
SEED = 20240801

# A few common English pieces, so prompts do not tokenize to single characters only.
_WORDS = (
    "the",
    "a",
    "an",
    "of",
    "and",
    "in",
    "on",
    "with",
    "to",
    "is",
    "for",
    "at",
    "by",
    "from",
    "photo",
    "picture",
    "image",
    "painting",
    "drawing",
    "cat",
    "dog",
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "sky",
    "sea",
    "sun",
    "moon",
    "tree",
    "house",
    "city",
    "mountain",
    "river",
    "flower",
    "bird",
    "portrait",
    "landscape",
    "style",
    "light",
    "dark",
    "small",
    "big",
    "old",
    "new",
    "beautiful",
)


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a finished pipeline (the marker is written last)."""
    return (Path(path) / MARKER).is_file() and (Path(path) / "model_index.json").is_file()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _clip_tokenizer():
    """A byte-level BPE CLIP tokenizer: every byte (plus its end-of-word form) and merges
    spelling a handful of whole words, then CLIP's two special tokens."""
    from transformers import CLIPTokenizer

    byte_chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in byte_chars + [c + "</w>" for c in byte_chars]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in sorted(set(_WORDS)):
        if len(word) < 2:
            continue
        # Left-to-right merges: "c a" -> "ca", "ca t</w>" -> "cat</w>".
        left = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merged = left + right
            if merged not in vocab:
                merges.append((left, right))
                vocab[merged] = len(vocab)
            left = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _t5_tokenizer():
    """A Unigram (SentencePiece-style) T5 tokenizer: specials, single characters with and
    without the word-start marker, and a few whole words."""
    from transformers import T5TokenizerFast

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {p for p, _ in pieces}
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/&%$#@+=*"
    for ch in alphabet:
        for piece, score in ((ch, -6.0), ("▁" + ch, -7.0)):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, score))
    for word in sorted(set(_WORDS)):
        piece = "▁" + word
        if piece not in seen:
            seen.add(piece)
            pieces.append((piece, -4.0))
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def _build(dest: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()

    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(SEED + 1)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            dense_act_fn="gelu_new",
            is_gated_act=True,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
            decoder_start_token_id=tokenizer_2.pad_token_id,
        )
    ).eval()
    torch.manual_seed(SEED + 2)
    # FLUX.1's layout: 16-channel latents... here 4, packed 2x2 into 16 transformer channels;
    # no guidance embedding (schnell is not guidance-distilled); RoPE axes sum to the head dim.
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=False,
        axes_dims_rope=(4, 4, 8),
    ).eval()
    torch.manual_seed(SEED + 3)
    # Four blocks: an 8x spatial scale, as FLUX's VAE (so sizes must be multiples of 16).
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=256,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=False,
    ).eval()
    # FLUX.1-schnell's scheduler configuration.
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=False,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
    (dest / MARKER).write_text(json.dumps({"recipe": RECIPE, "seed": SEED}) + "\n")


def ensure_tiny_flux(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` holds the tiny FLUX pipeline; build it if not. Returns ``path``.

    Safe to call from several processes at once: each builds in its own temporary directory
    and the first rename wins; the others find a complete pipeline and discard theirs.
    """
    path = Path(path).resolve()
    if is_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _build(tmp)
        try:
            # Atomic; replaces an empty directory, fails on a non-empty one.
            os.rename(tmp, path)
        except OSError:
            if not is_complete(path):
                raise RuntimeError(f"{path} exists but does not hold a complete tiny FLUX pipeline") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def main(argv: list[str]) -> None:
    """``python -m lexora_dev.flux_weights [PATH]``: build (if needed) and print the path; with
    no PATH, the cache location the local Triton launcher uses."""
    if len(argv) > 1:
        sys.exit("usage: python -m lexora_dev.flux_weights [PATH]")
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("DIFFUSERS_VERBOSITY", "error"),
    ):
        os.environ.setdefault(name, value)
    path = Path(argv[0]) if argv else cache_dir(Path(".lexora")) / RECIPE
    print(ensure_tiny_flux(path))


if __name__ == "__main__":
    main(sys.argv[1:])
