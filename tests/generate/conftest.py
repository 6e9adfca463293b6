"""A tiny causal LM (2-layer, 32-wide Llama from a config) with a word-level tokenizer and a chat template, built
offline, and copy-task pairs to train it on."""

from __future__ import annotations

import random

import pytest

WORDS = ["red", "blue", "green", "cat", "dog", "fish", "sun", "moon", "tree", "rock", "milk", "salt"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def copy_pairs(n: int, seed: int, length: int = 2) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    inputs = [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(n)]
    return inputs, list(inputs)


def build_tiny_llm(folder, hidden: int = 32):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "<|im_end|>", "<|im_start|>"]
    vocab = {t: i for i, t in enumerate(specials + ["user", "assistant", "system", "copy", ":", "write"] + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="<|im_end|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                         tie_word_embeddings=True,
                         initializer_range=0.4)  # the output layer stays frozen: logits need a usable scale
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def tiny_llm_64(tmp_path_factory):
    """64 wide: bitsandbytes' CPU 4-bit inference kernels need rows of at least one 64-value block."""
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm-64"), hidden=64)
