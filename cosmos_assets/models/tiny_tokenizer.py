"""An offline Qwen2-style tokenizer and chat template for tiny checkpoints.

Real Qwen2.5-VL tokenizers cannot be downloaded here, so tiny checkpoints get a small byte-level BPE
trained on the spot, with the special tokens, token ids the model config refers to, and a chat
template that lays out system / user / assistant turns and vision placeholders the way Qwen's does.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = [
    END_OF_TEXT, "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Written for this project: Qwen's turn layout (im_start/im_end, vision_start + pad + vision_end),
# with string or list-of-parts content and an optional generation prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'video' -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)

_CORPUS = """
The video shows a car driving on a highway at night in the rain. A robot arm picks a bottle from a
conveyor belt in a warehouse. Does the video contain any anomalies or artifacts? Answer yes or no.
<think> The objects move smoothly, the lighting is consistent and nothing appears or disappears. </think>
<answer>No</answer> <answer>Yes</answer> Describe the scene, the camera motion, the weather and the objects.
A person walks along a street with trees, buildings, traffic lights, trucks, pedestrians and signs.
Fog, snow, dusk, sunset, sunny, cloudy, indoor, outdoor, forklift, pallet, shelf, box, hand, gripper.
"""


def build_byte_level_tokenizer(vocab_size: int = 1024, extra_text: str = "") -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS, extra_text], trainer=trainer)
    return tokenizer


def build_qwen_tokenizer(vocab_size: int = 1024):
    """A ``Qwen2TokenizerFast`` wrapping the trained BPE, with Qwen's special tokens and chat template."""
    from transformers import Qwen2TokenizerFast

    fast = Qwen2TokenizerFast(
        tokenizer_object=build_byte_level_tokenizer(vocab_size),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token=END_OF_TEXT,
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
