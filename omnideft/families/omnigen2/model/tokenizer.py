"""An offline Qwen2-style tokenizer for the tiny OmniGen2 preset: byte-level BPE (any text, no unknowns) trained
deterministically on the tiny vocabulary's words, Qwen2.5-VL's special tokens, and a ChatML chat template.

The published model's tokenizer (151k tokens) cannot be downloaded in tests; the OmniGen2 pipeline needs only
`apply_chat_template` and the ids, which this provides in the same form (`<|im_start|>role\\n...<|im_end|>\\n`).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from omnideft.model.tokenizer import tiny_vocab

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
SYSTEM_PROMPT = "You are a helpful assistant that generates high-quality images based on user instructions."
# Qwen2.5's ChatML template for text messages; a default system turn when none is given, as Qwen's has.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY_BPE_SIZE = 1024


def build_tiny_qwen_tokenizer(model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Same ids on every call: the BPE is trained on a fixed word list with a fixed target size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [w for w in tiny_vocab() if not w.startswith("<") or len(w) < 3] + SYSTEM_PROMPT.split()
    trainer = trainers.BpeTrainer(vocab_size=TINY_BPE_SIZE, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(corpus)] + corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
    )
