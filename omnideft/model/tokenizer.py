"""An offline word-level tokenizer for the tiny preset (no download, deterministic ids).

BOS must be id 1: OmniGen's processor strips a leading id 1 from every prompt chunk after an image tag.
Text is lower-cased and split into words and punctuation runs; runs of digits are split into single digits, as
Phi-3's (Llama's) tokenizer does, so numbers such as camera parameters written as text (`camera.encoding: text`)
tokenise without unknowns. Unknown words map to `<unk>` (id 0). Special tokens added later (e.g. `<cam>`, see
omnideft/camera/token.py) are matched before this splitting.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>"]
_WORDS_FILE = Path(__file__).with_name("tiny_vocab.txt")


def tiny_vocab(extra_words: tuple[str, ...] = ()) -> dict[str, int]:
    """The tiny preset's words, then `extra_words` not already in it (ids of the tiny words never change)."""
    words = [w.strip() for w in _WORDS_FILE.read_text().split() if w.strip()]
    vocab: dict[str, int] = {}
    for w in SPECIALS + words + [w.lower() for w in extra_words]:
        vocab.setdefault(w, len(vocab))
    return vocab


def build_tiny_tokenizer(model_max_length: int = 4096, extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """The tiny preset's tokenizer; the `small` preset adds the words of its task texts (`extra_words`)."""
    tok = Tokenizer(WordLevel(vocab=tiny_vocab(extra_words), unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    # Whitespace = \w+|[^\w\s]+ : "<|user|>" -> "<|", "user", "|>"; "<img>" -> "<", "img", ">".
    # A digit next to another digit stands alone: "0.05" -> "0", ".", "0", "5"; "sam2" stays one word.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Whitespace(),
        pre_tokenizers.Split(Regex(r"\d(?=\d)|(?<=\d)\d"), behavior="isolated"),
    ])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        model_max_length=model_max_length,
    )
