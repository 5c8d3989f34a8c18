"""Note -> prompt text: the fields of a note (core.contracts) in the variant's template
(train.model_config).

Content hashtags (`#tag#`) move to the tags and newlines become spaces (as the
reference does), then fields are truncated to the config's limits (`title_max`, `content_max`, `max_tags` x
`tag_max`, counted in `limit_unit`), inserted into the variant's template as JSON string
literals, and the whole text prompt is capped at `max_prompt_tokens` by cutting content,
then tags, then title, never the template, whose last token is where the embedding is
pooled.
"""

from __future__ import annotations

import json
from typing import Any

from core.contracts import Note, merge_tags, strip_hashtags
from train.model_config import IMG_EMB_TOKEN, IMG_TOKEN, ModelConfig


def _clean(text: str) -> str:
    """Drop our placeholder tokens from user text: a note saying "<IMG>" must not become a
    second image slot (or a second mICL pooling point)."""
    for token in (IMG_TOKEN, IMG_EMB_TOKEN):
        text = text.replace(token, "")
    return text


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate(text: str, limit: int, unit: str, tokenizer: Any = None) -> str:
    """The longest prefix of `text` holding at most `limit` chars or tokens.

    Token prefixes are cut at a character offset from the fast tokenizer's offset
    mapping, so no token is split into broken bytes.
    """
    if limit <= 0 or not text:
        return ""
    if unit == "chars" or tokenizer is None:
        return text[:limit]
    if not getattr(tokenizer, "is_fast", False):  # slow tokenizers have no offset mapping
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= limit else tokenizer.decode(ids[:limit])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= limit:
        return text
    return text[: offsets[limit - 1][1]]


def _fill(template: str, title: str, tags: list[str], content: str) -> str:
    # JSON literals keep quotes and backslashes in user text from breaking the shape.
    lit = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731
    return (
        template.replace("{title}", lit(title))
        .replace("{tags}", lit(", ".join(tags)))
        .replace("{content}", lit(content))
    )


def render_prompt(note: Note, config: ModelConfig, tokenizer: Any = None, blank_text: bool = False) -> str:
    """The variant's prompt for one note (`blank_text`: title, tags and content emptied).

    `tokenizer` is needed for token limits and the prompt cap; without it limits count
    characters and the cap is not applied.
    """
    unit = config.limit_unit
    if blank_text:
        title, content, tags = "", "", []
    else:
        # The reference pulls `#tag#` hashtags out of the content into the tags (so they do
        # not eat the content budget twice) and normalises newlines before truncating.
        content_raw = _clean(str(note.get("content") or ""))
        title = truncate(_clean(str(note.get("title") or "")), config.title_max, unit, tokenizer)
        content = truncate(strip_hashtags(content_raw), config.content_max, unit, tokenizer)
        tags = [
            truncate(_clean(str(t)), config.tag_max, unit, tokenizer)
            for t in merge_tags(note.get("tags"), content_raw)
        ]
        tags = [t for t in tags if t][: config.max_tags]
    template = config.prompt
    text = _fill(template, title, tags, content)
    if tokenizer is None:
        return text
    # Cap the whole prompt: shrink content, then tags, then title by the excess.
    for _ in range(64):  # each pass removes at least one token or one tag; bounded anyway
        excess = _n_tokens(tokenizer, text) - config.max_prompt_tokens
        if excess <= 0:
            break
        if content:
            content = truncate(content, max(0, _n_tokens(tokenizer, content) - excess), "tokens", tokenizer)
        elif tags:
            tags = tags[:-1]
        elif title:
            title = truncate(title, max(0, _n_tokens(tokenizer, title) - excess), "tokens", tokenizer)
        else:
            break  # the template alone is over the cap: keep it whole
        text = _fill(template, title, tags, content)
    return text
