"""Prompt templates: shipped files, and templates a task file registers at run time."""

from __future__ import annotations

import pytest

from lai.errors import ConfigError
from lai.instructor import prompts


def test_a_registered_template_renders_and_hashes_like_a_shipped_one() -> None:
    prompts.register("test_only_greeting", "Solve: $question")
    prompts.register("test_only_greeting", "Solve: $question")  # the same text again: fine
    assert prompts.render("test_only_greeting", question="2+2") == "Solve: 2+2"
    assert len(prompts.template_hash("test_only_greeting")) == 12
    assert prompts.template_hash("test_only_greeting") != prompts.template_hash("le_math")


def test_a_name_cannot_be_given_a_second_text_or_shadow_a_shipped_template() -> None:
    prompts.register("test_only_other", "A $question")
    with pytest.raises(ConfigError, match="already named 'test_only_other'"):
        prompts.register("test_only_other", "B $question")
    with pytest.raises(ConfigError, match="already named 'le_math'"):
        prompts.register("le_math", "anything")
    with pytest.raises(ConfigError, match="no prompt template named 'missing_one'"):
        prompts.render("missing_one")
