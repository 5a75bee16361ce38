"""A byte-level BPE tokenizer with a chat template, trained on world text.

Conversations render as

    <|user|>QUESTION<|end|><|assistant|>RESPONSE<|end|>

and the generation prompt is `<|assistant|>`. The template adds no BOS token,
and neither does plain encoding: `tokenizer(text)` returns exactly the tokens
of `text`, because the tokenizer has no post-processor. `<|end|>` is the EOS
token and ends every turn. `<|bos|>` is registered for models that need a BOS
id but appears in no rendered text.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
END_TOKEN = "<|end|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
# Token ids follow this order: pad is 0, bos 1, end 2, user 3, assistant 4.
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, END_TOKEN, USER_TOKEN, ASSISTANT_TOKEN)

# The {% generation %} block marks assistant tokens for
# `apply_chat_template(..., return_assistant_tokens_mask=True)`.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "<|user|>{{ message['content'] }}<|end|>"
    "{%- elif message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{%- else -%}"
    "{{ raise_exception('unsupported role ' ~ message['role'] ~ '; use user or assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

BYTE_ALPHABET_SIZE = 256


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1536,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it for transformers.

    The vocabulary contains the special tokens, the 256 byte symbols and up to
    `vocab_size - 261` merges, each seen at least `min_frequency` times, so
    it can encode any text. `decode(encode(text)) == text` for every string.
    With the default 1536 trained on world text, the longest world responses
    take under 64 tokens.
    """
    min_vocab_size = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if vocab_size <= min_vocab_size:
        raise ValueError(
            f"vocab_size must exceed {min_vocab_size} (256 bytes plus {len(SPECIAL_TOKENS)} special tokens), "
            f"got {vocab_size}; use e.g. 1024"
        )

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=END_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[USER_TOKEN, ASSISTANT_TOKEN],
        chat_template=CHAT_TEMPLATE,
        # Cleanup would delete the space in e.g. "a ." and break round trips.
        clean_up_tokenization_spaces=False,
    )
