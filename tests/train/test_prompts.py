"""Prompt rendering: templates per variant, limits in chars or tokens, the prompt cap
that never cuts the template's end, JSON-safe fields."""

from __future__ import annotations

import json

from train.llm import byte_tokenizer
from train.model_config import IMG_EMB_TOKEN, IMG_TOKEN, ModelConfig
from train.prompts import render_prompt, truncate

NOTE = {
    "note_id": "1",
    "title": 'A "quoted" title that is long',
    "content": "Morning ride along the river #cycling# with friends",
    "tags": ["bike", "outdoors"],
    "image": "1.png",
}
TOK = byte_tokenizer()  # one token per byte: token limits are easy to check by hand


def test_templates_per_variant() -> None:
    text = render_prompt(NOTE, ModelConfig(variant="text-only", limit_unit="chars"))
    basic = render_prompt(NOTE, ModelConfig(variant="basic", limit_unit="chars"))
    micl = render_prompt(NOTE, ModelConfig(variant="notellm2", limit_unit="chars"))
    assert IMG_TOKEN not in text and IMG_TOKEN in basic and IMG_EMB_TOKEN not in basic
    assert micl.index(IMG_TOKEN) < micl.index(IMG_EMB_TOKEN) < micl.index('"title"')
    for p in (text, basic, micl):
        assert p.endswith('compress this note into one word: "')
    assert render_prompt(NOTE, ModelConfig(variant="late-fusion", limit_unit="chars")) == basic
    assert render_prompt(NOTE, ModelConfig(variant="micl", limit_unit="chars")) == micl


def test_char_limits_and_json_escaping() -> None:
    cfg = ModelConfig(
        variant="text-only", limit_unit="chars", title_max=10, content_max=12, tag_max=4, max_tags=2
    )
    prompt = render_prompt(NOTE, cfg)
    body = json.loads(prompt[len("Note: ") : prompt.index("}, compress") + 1])
    assert body == {"title": 'A "quoted"', "tags": "bike, outd", "content": "Morning ride"}


def test_hashtags_move_from_content_to_tags() -> None:
    prompt = render_prompt(NOTE, ModelConfig(variant="text-only", limit_unit="chars"))
    assert '"tags": "bike, outdoors, cycling"' in prompt
    # pulled out of the content, not duplicated there (it would eat the content budget)
    assert '"content": "Morning ride along the river with friends"' in prompt


def test_long_hashtags_are_dropped_and_newlines_normalised_before_truncation() -> None:
    # '#fourteen_chars#' is 16 characters with both '#': kept; one more character: dropped.
    note = dict(NOTE, tags=[], content="line one\r\n\nline two #fourteen_chars# #fifteen_chars_x# end")
    cfg = ModelConfig(variant="text-only", limit_unit="chars", content_max=17)
    prompt = render_prompt(note, cfg)
    assert '"tags": "fourteen_chars"' in prompt
    assert '"content": "line one line two"' in prompt  # newlines became one space, then cut to 17


def test_token_limits_use_offsets() -> None:
    assert truncate("héllo world", 3, "tokens", TOK) == "hé"  # é is two bytes: never split
    assert truncate("short", 99, "tokens", TOK) == "short"
    assert truncate("abc", 0, "tokens", TOK) == ""


def test_prompt_cap_cuts_content_then_tags_never_the_template() -> None:
    base = ModelConfig(
        variant="basic", limit_unit="tokens", content_max=1000, title_max=1000, max_prompt_tokens=1000
    )
    full = render_prompt(NOTE, base, TOK)
    n_full = len(TOK(full)["input_ids"])
    capped_cfg = ModelConfig(**{**base.to_dict(), "max_prompt_tokens": n_full - 10})
    capped = render_prompt(NOTE, capped_cfg, TOK)
    assert len(TOK(capped)["input_ids"]) <= n_full - 10
    # the content (hashtag already moved to the tags) lost 10 bytes
    assert '"content": "Morning ride along the river wi"' in capped
    assert capped.endswith('compress this note into one word: "')
    tiny = ModelConfig(**{**base.to_dict(), "max_prompt_tokens": 10})
    only_template = render_prompt(NOTE, tiny, TOK)  # template alone is over the cap: kept whole
    assert only_template == render_prompt({"title": "", "content": ""}, tiny, TOK)
    assert only_template.endswith('compress this note into one word: "') and IMG_TOKEN in only_template


def test_blank_text() -> None:
    prompt = render_prompt(NOTE, ModelConfig(variant="basic"), TOK, blank_text=True)
    assert '"title": "", "tags": "", "content": ""' in prompt


def test_placeholder_tokens_in_user_text_are_dropped() -> None:
    note = dict(NOTE, title="look <IMG> here", content="a <IMG_EMB> b", tags=["<IMG>x"])
    cfg = ModelConfig(variant="notellm2", limit_unit="chars", max_prompt_tokens=1000)
    prompt = render_prompt(note, cfg, TOK)
    assert prompt.count(IMG_TOKEN) == 1 and prompt.count(IMG_EMB_TOKEN) == 1
    assert '"title": "look  here"' in prompt and '"tags": "x"' in prompt
