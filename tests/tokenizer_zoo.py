"""Tiny tokenizers in the layouts of real model families, for tokenization tests.

Each is a byte-level BPE trained on a few sentences and wrapped in
PreTrainedTokenizerFast, with special tokens, BOS/EOS/pad settings and a chat
template written here in the style of its family:

- llama3: <|begin_of_text|> added by the tokenizer AND written by the template;
  turns end with <|eot_id|> while eos_token is <|end_of_text|> (base-model
  setting); no pad token.
- qwen2: ChatML (<|im_start|>, <|im_end|>) with a default system turn; no BOS;
  eos_token and pad_token are both <|endoftext|> (base-model setting).
- smollm2: ChatML; bos_token is <|im_start|>, and eos_token and pad_token are
  both <|im_end|>, so the end of turn, EOS and pad are one token.
- gpt2: no chat template; <|endoftext|> is BOS, EOS and pad at once.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "What is two plus three? Two plus three is five.",
    "Name the capital of France. The capital of France is Paris.",
    "How many letters are in cat? There are three letters in cat.",
    "Thanks for asking! I am happy to help you with that question today.",
    "I am not sure I can help with that.",
    "You are a helpful assistant.",
    "system user assistant",
] * 4

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

QWEN2_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a small assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_byte_level_bpe(special_tokens: list[str], corpus: list[str] = CORPUS, vocab_size: int = 320) -> Tokenizer:
    """Train a byte-level BPE whose first ids are `special_tokens`, in order."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tokenizer = train_byte_level_bpe(specials)
    bos_id = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos_id)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    wrapped.chat_template = LLAMA3_TEMPLATE
    return wrapped


def qwen2_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = train_byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    wrapped.chat_template = QWEN2_TEMPLATE
    return wrapped


def smollm2_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = train_byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    wrapped.chat_template = SMOLLM2_TEMPLATE
    return wrapped


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = train_byte_level_bpe(["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def chatml_tokenizer(corpus: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A ChatML tokenizer trained on `corpus`, set up like SmolLM2 but without a default system turn."""
    tokenizer = train_byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], corpus, vocab_size)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|im_end|>")
    wrapped.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return wrapped


TOKENIZERS = {
    "llama3": llama3_tokenizer,
    "qwen2": qwen2_tokenizer,
    "smollm2": smollm2_tokenizer,
    "gpt2": gpt2_tokenizer,
}
