"""The rules every renderer shares (lai.report.vocabulary), on saved-config dicts."""

from __future__ import annotations

from lai.config import EMBEDDED_MODEL
from lai.report.markdown import WEAK_INSTRUCTOR
from lai.report.vocabulary import (
    change_points,
    dedup_embedder,
    embedded_instructor,
    local_server_name,
    points_text,
    strategy_description,
    strategy_label,
    strategy_words,
    trains_on_real_rows,
)


def test_the_weak_instructor_note_names_the_server() -> None:
    local = {"enabled": True, "model": EMBEDDED_MODEL, "server": "llama_cpp"}
    assert embedded_instructor({"instructor": {"local": local}})
    assert not embedded_instructor({"instructor": {"local": {**local, "enabled": False}}})
    assert not embedded_instructor({"instructor": {"local": {**local, "model": "some/model"}}})
    assert not embedded_instructor({})
    assert "served by llama.cpp" in WEAK_INSTRUCTOR.format(server=local_server_name(local))
    assert "served by vLLM" in WEAK_INSTRUCTOR.format(server=local_server_name({"server": "vllm"}))
    assert local_server_name({}) == "llama.cpp"  # runs saved before instructor.local.server


def test_verify_falls_back_to_the_strategy_embedder() -> None:
    assert dedup_embedder({"strategy": {"embedder": "hashing"}}) == "hashing"
    assert dedup_embedder({"strategy": {"embedder": "hashing"}, "verify": {"embedder": "x"}}) == "x"
    assert dedup_embedder({}) is None


def test_a_change_in_points() -> None:
    assert points_text(change_points(0.525, 0.5)) == "+2.5"
    assert points_text(change_points(0.4, 0.5)) == "-10.0"


def test_strategy_words_come_from_the_strategy() -> None:
    mix = {"name": "mix", "k": 2, "mix": {"schedule": "alternate"}}
    assert strategy_label(mix) == "mix (alternate, k=2)"
    assert strategy_words(mix) == "LE and LEC together: LE in odd iterations, LEC in even ones"
    assert strategy_description(mix) == "LE and LEC together"
    assert strategy_label({"name": "mix", "mix": {"lec_fraction": 0.25}}) == "mix (ratio, 25% lec)"
    assert strategy_label({"name": "lec", "k": 3}) == "lec (k=3)" and strategy_label({}) == "le"
    assert trains_on_real_rows({"name": "nearest"}) and trains_on_real_rows({"name": "original"})
    assert not any(trains_on_real_rows({"name": n}) for n in ("le", "lec", "mix", "random", "unknown"))
