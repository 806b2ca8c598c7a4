"""Token-budget batching, per-row stop strings and batched log-likelihoods on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest

from lai.targets.batching import budget_batches, longest_first, padded_tokens
from lai.targets.greedy import continuous_greedy
from lai.targets.hf import HFTarget
from lai.targets.prompting import cut_at_stop

# The batching rule needs neither torch nor transformers; every other test takes the tiny
# model (tiny_model_dir), which skips without them.

# Very different lengths, more prompts than any batch holds, chat and raw.
MIXED: list = [[{"role": "user", "content": "word " * n}] for n in (1, 40, 3, 25, 7, 60, 2, 12, 30, 5)]
MIXED += ["Q: raw prompt " * 5, "short", "Q: raw prompt " * 5]  # a duplicate too


@pytest.fixture(scope="module")
def target(tiny_model_dir: Path) -> HFTarget:
    return HFTarget(str(tiny_model_dir), batch_size=4)


# ---- the batching rule --------------------------------------------------------------------


def test_budget_batches_respect_rows_and_tokens() -> None:
    lengths = [5, 50, 20, 20, 3, 49, 8, 1]
    order = longest_first(lengths)
    assert order == [1, 5, 2, 3, 6, 0, 4, 7]  # longest first, ties in input order
    batches = budget_batches(order, lengths, max_tokens=110, max_rows=3, extra=10)
    assert [i for b in batches for i in b] == order  # every request once, in order
    for batch in batches:
        assert len(batch) <= 3
        assert padded_tokens(batch, lengths, 10) <= 110 or len(batch) == 1
    assert batches[0] == [1]  # 2 x (50 + 10) > 110
    # A request over the budget runs alone; no budget means fixed counts.
    assert budget_batches([0, 1], [500, 2], max_tokens=100, max_rows=8) == [[0], [1]]
    assert budget_batches(list(range(7)), [4] * 7, max_tokens=10**9, max_rows=3) == [[0, 1, 2], [3, 4, 5], [6]]


# ---- generation -----------------------------------------------------------------------------


@pytest.mark.parametrize("continuous", [True, False])
def test_budget_keeps_order_and_text_of_unbatched_generation(tiny_model_dir: Path, continuous: bool) -> None:
    single = HFTarget(str(tiny_model_dir), batch_size=1)
    expected = [single.generate([p], max_new_tokens=10)[0] for p in MIXED]
    lengths = [len(single.tokenizer(single.render(p), add_special_tokens=False).input_ids) for p in MIXED]
    budget = 3 * (max(lengths) + 10)  # three of the longest rows, more of the short ones
    budgeted = HFTarget(str(tiny_model_dir), batch_size=6, max_batch_tokens=budget, continuous=continuous)
    budgeted.batch_log = []
    assert budgeted.generate(MIXED, max_new_tokens=10) == expected  # input order, same texts
    log = budgeted.batch_log
    assert log and all(kind == "generate" for kind, _, _ in log)
    assert all(tokens <= budget or rows == 1 for _, rows, tokens in log)
    assert all(rows <= 6 for _, rows, _ in log)
    assert any(rows > 3 for _, rows, _ in log)  # short prompts share a batch beyond the long rows' 3
    assert max(rows for _, rows, _ in log) < len(MIXED)


def test_a_tight_budget_runs_rows_one_at_a_time(tiny_model_dir: Path) -> None:
    target = HFTarget(str(tiny_model_dir), batch_size=8, max_batch_tokens=1)
    target.batch_log = []
    one_by_one = HFTarget(str(tiny_model_dir), batch_size=1)
    assert target.generate(MIXED[:5], max_new_tokens=6) == [one_by_one.generate([p], max_new_tokens=6)[0] for p in MIXED[:5]]
    assert {rows for _, rows, _ in target.batch_log} == {1}


# ---- stop strings ----------------------------------------------------------------------------


def _ids(target: HFTarget, prompt: object) -> list[int]:
    return target.tokenizer(target.render(prompt), add_special_tokens=False).input_ids  # type: ignore[arg-type]


def _marker_for(free: str) -> str:
    """A two-character stop string the free generation contains, not at its very start."""
    for start in range(2, len(free) - 1):
        marker = free[start : start + 2]
        if marker.strip() and marker not in free[: start + 1]:
            return marker
    pytest.skip(f"the random model's text {free!r} has no usable marker")


@pytest.mark.parametrize("continuous", [True, False])
def test_each_row_stops_at_its_own_stop_string_and_is_cut_there(tiny_model_dir: Path, continuous: bool) -> None:
    target = HFTarget(str(tiny_model_dir), batch_size=4, continuous=continuous)
    prompts = MIXED[:6]
    free = target.generate(prompts, max_new_tokens=24)
    marker = _marker_for(free[1])
    stopped = target.generate(prompts, max_new_tokens=24, stop=[marker, "\x00never"])
    for text, reference in zip(stopped, free, strict=True):
        assert marker not in text
        assert text == cut_at_stop(reference, [marker]).strip()
    assert len(stopped[1]) < len(free[1])


def test_a_row_leaves_the_batch_on_the_token_that_completes_its_stop_string(target: HFTarget) -> None:
    from transformers import DynamicCache

    rows = [_ids(target, p) for p in MIXED[:6]]
    order = longest_first([len(r) for r in rows])
    common = dict(
        order=order, pad=lambda group: target._pad(group, 0), new_cache=lambda _n: DynamicCache(), cached_tokens=0,
        cache_argument=target._cache_argument, batch_size=3, max_new_tokens=24,
    )  # fmt: skip
    free = continuous_greedy(target.model, target.tokenizer, rows, **common)
    marker = _marker_for(target.tokenizer.decode(free[1], skip_special_tokens=True))
    stopped = continuous_greedy(target.model, target.tokenizer, rows, **common, stop=[marker])
    decode = lambda tokens: target.tokenizer.decode(tokens, skip_special_tokens=True)  # noqa: E731
    for tokens, full in zip(stopped, free, strict=True):
        assert tokens == full[: len(tokens)]  # the same tokens up to where it stopped
        if marker in decode(tokens):  # stopped by the marker: on the first token that shows it
            assert marker not in decode(tokens[:-1])
        else:
            assert tokens == full  # never saw it: ran to the end (or its end-of-sequence)
    assert len(stopped[1]) < len(free[1])
    # The static path (model.generate) stops each row at the same token; the rest is padding.
    static = target._generate_batch([rows[i] for i in order], 0, lambda _n: DynamicCache(), 24, [marker])
    for i, tokens in zip(order, static, strict=True):
        assert tokens[: len(stopped[i])] == stopped[i]
        if marker in decode(stopped[i]):
            assert set(tokens[len(stopped[i]) :]) <= {target.tokenizer.pad_token_id}


def test_stop_strings_match_the_generated_text_only(target: HFTarget) -> None:
    # A stop string made of the prompt's last character and the reply's first must not end
    # the reply at once (transformers' stop_strings did, on the static path): lm-eval looks
    # at generated text only, and so does the continuous path.
    prompt = "Once upon a time"
    free = target.generate([prompt], max_new_tokens=12)[0]
    if not free:
        pytest.skip("empty generation")
    marker = prompt[-1] + free[0]
    expected = cut_at_stop(free, [marker])
    static = HFTarget(target.name, batch_size=4, continuous=False)
    assert static.generate([prompt], max_new_tokens=12, stop=[marker]) == [expected]
    assert target.generate([prompt], max_new_tokens=12, stop=[marker]) == [expected]


# ---- log-likelihood ------------------------------------------------------------------------


def _pairs() -> list[tuple[object, str]]:
    arc = [
        ("Question: Which gas do plants take in?\nAnswer:", option)
        for option in (" carbon dioxide", " oxygen", " nitrogen gas from the soil", " helium")
    ]
    mmlu = [
        ("The following are multiple choice questions.\n\nWhat is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", f" {x}")
        for x in "ABCD"
    ]
    chat = [([{"role": "user", "content": "Pick a letter."}], x) for x in "ABC"]
    return [
        *arc[:2],
        ("A context with a trailing space ", "and a continuation"),
        *mmlu,
        *arc[2:],
        *chat,
        ("Short", " one"),
        ("Question: Which gas do plants take in?\nAnswer:", " carbon dioxide"),  # a repeated pair
        ("x" * 3, " y" * 40),  # continuation longer than its context
    ]


def test_loglikelihood_batched_and_shared_equals_one_by_one(tiny_model_dir: Path) -> None:
    pairs = _pairs()
    single = HFTarget(str(tiny_model_dir), batch_size=1, share_context=False)
    expected = [single.loglikelihood([pair])[0] for pair in pairs]  # type: ignore[list-item]
    for options in ({"batch_size": 16}, {"batch_size": 3, "max_batch_tokens": 40}, {"batch_size": 5, "share_context": False}):
        target = HFTarget(str(tiny_model_dir), **options)  # type: ignore[arg-type]
        target.batch_log = []
        scores = target.loglikelihood(pairs)  # type: ignore[arg-type]
        assert scores == pytest.approx(expected, abs=1e-4), options
        assert all(rows <= options["batch_size"] for _, rows, _ in target.batch_log)
        budget = options.get("max_batch_tokens")
        if budget:
            assert all(tokens <= budget or rows == 1 for _, rows, tokens in target.batch_log)
    assert all(score < 0 for score in expected)


def test_a_shared_context_is_run_once(tiny_model_dir: Path) -> None:
    target = HFTarget(str(tiny_model_dir), batch_size=16)
    target.batch_log = []
    pairs = _pairs()
    target.loglikelihood(pairs)  # type: ignore[arg-type]
    distinct = {tuple(target._encode_pair(c, x)[0][: target._encode_pair(c, x)[1]]) for c, x in pairs}  # type: ignore[arg-type]
    assert len(distinct) < len(pairs)
    assert sum(rows for kind, rows, _ in target.batch_log if kind == "context") == len(distinct)
    # One-token continuations (MMLU's letters) need no second pass.
    target.batch_log = []
    mmlu = [p for p in pairs if isinstance(p[0], str) and p[0].startswith("The following")]
    target.loglikelihood(mmlu)  # type: ignore[arg-type]
    assert [kind for kind, _, _ in target.batch_log] == ["context"]


def test_loglikelihood_of_nothing(target: HFTarget) -> None:
    assert target.loglikelihood([]) == []
    assert target.generate([], max_new_tokens=4) == []
