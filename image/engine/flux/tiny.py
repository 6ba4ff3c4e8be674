"""`builtin:tiny-flux`: a Flux-shaped pipeline built from configs with deterministic random weights, for tests.

Same module tree and conditioning paths as FLUX.1 (double- and single-stream blocks, 16-channel autoencoder with
shift/scale, 2x2 packed latents, CLIP-L pooled vector, T5 sequence, guidance embedding for dev/krea, none for
schnell), small enough to train on a CPU in seconds. The CLIP tokenizer is the real one (`tokenizer.py`); the T5
tokenizer is a small character-level Unigram model built here with the `tokenizers` library (T5's own
sentencepiece file is not shipped: the real models bring theirs), with T5's special ids (pad 0, eos 1, unk 2).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

TINY_SEED = 20261129
T5_DIM, CLIP_DIM = 32, 32
TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=8,
    num_attention_heads=2,
    joint_attention_dim=T5_DIM,
    pooled_projection_dim=CLIP_DIM,
    axes_dims_rope=(2, 2, 4),
)
AE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=8,
    sample_size=64,
    use_quant_conv=False,
    use_post_quant_conv=False,
    scaling_factor=0.3611,
    shift_factor=0.1159,  # FLUX.1's ae (diffusers vae/config.json of FLUX.1-dev)
)
# FLUX.1's scheduler config (FLUX.1-dev scheduler/scheduler_config.json): resolution-dependent shift at sampling.
SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)


@dataclass
class TinyFluxParts:
    transformer: object
    vae: object
    text_encoders: list  # [CLIP-L, T5]
    tokenizers: list
    scheduler: object


def t5_tokenizer():
    """A character-level Unigram tokenizer with T5's special tokens, as a `T5TokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0, model_max_length=512
    )


def build_tiny_flux(flavour: str = "dev") -> TinyFluxParts:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from lorarun.image.engine.tokenizer import VOCAB_SIZE, load_tokenizer

    t5_tok = t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = FluxTransformer2DModel(**TRANSFORMER, guidance_embeds=flavour != "schnell")
        vae = AutoencoderKL(**AE)
        clip = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=VOCAB_SIZE,
                hidden_size=CLIP_DIM,
                intermediate_size=CLIP_DIM * 2,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                layer_norm_eps=1e-5,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
                projection_dim=CLIP_DIM,
            )
        )
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tok),
                d_model=T5_DIM,
                d_kv=8,
                d_ff=T5_DIM * 2,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                feed_forward_proj="gated-gelu",
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
    for module in (transformer, vae, clip, t5):
        module.eval()
    return TinyFluxParts(
        transformer, vae, [clip, t5], [load_tokenizer("clip_l"), t5_tok], FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    )
