"""A table of bad inputs a user can make, each fixable from one line of output.

Every case runs the real ``lai`` command in a fresh folder and must end with exit status
2, exactly one line on stderr (the ``error:`` line) naming the file, key or URL to fix,
no traceback, and every file that was there before byte-identical afterwards (a failed
command never damages a run). A few problems can only show once a run is under way (an
endpoint that turns out to be a web page); those cases (``midrun``) may print progress
before their one error line, and their earlier records must still be intact.

Fast: fake target and instructor, tiny data files written here; each case is a forked
child of the test process running the real ``lai.cli.main`` (see :func:`run_forked`),
four at a time, so the table costs seconds, not one interpreter start per case.
"""

from __future__ import annotations

import http.server
import importlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.forked_cli import start_forked

REPO = Path(__file__).resolve().parents[2]

TRAIN = [{"question": f"Tom has {i} apples and buys 2 more. How many now?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"} for i in range(12)]
TEST = [{"question": f"Ann has {i} pens and loses 1. How many left?", "answer": f"{i} - 1 = {i - 1}\n#### {i - 1}"} for i in range(5, 8)]


def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def base_config() -> dict[str, Any]:
    """A run on fakes that finishes in seconds; data paths relative to the config file."""
    return {
        "name": "t",
        "target": {"backend": "scripted", "model": "m"},
        "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 4, "path": "data/train.jsonl"}]},
        "instructor": {"backend": "scripted"},
        "strategy": {"embedder": "hashing"},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [{"task": "gsm8k", "pool": "test", "path": "data/test.jsonl"}]},
    }


def write_data(folder: Path) -> None:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "train.jsonl").write_text(jsonl(TRAIN))
    (folder / "data" / "test.jsonl").write_text(jsonl(TEST))


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config(folder: Path, changes: dict[str, Any] | None = None, text: str | None = None, name: str = "c.yaml") -> str:
    """Write the data and a config (the base with ``changes``, or raw ``text``); return its path."""
    write_data(folder)
    path = folder / name
    path.write_text(text if text is not None else yaml.safe_dump(merge(base_config(), changes or {})))
    return str(path)


def validate(changes: dict[str, Any] | None = None, *extra: str) -> Callable[[Path], list[str]]:
    return lambda f: ["validate", config(f, changes), *extra]


def validate_text(text: str) -> Callable[[Path], list[str]]:
    return lambda f: ["validate", config(f, text=text)]


def run(changes: dict[str, Any] | None = None, *extra: str) -> Callable[[Path], list[str]]:
    return lambda f: ["run", config(f, changes), *extra]


def data_case(content: bytes | str, which: str = "train") -> Callable[[Path], list[str]]:
    """lai validate with one data file replaced by ``content``."""

    def make(folder: Path) -> list[str]:
        path = config(folder)
        target = folder / "data" / f"{which}.jsonl"
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["validate", path]

    return make


def finished_run(folder: Path, damage: Callable[[Path], None] | None = None) -> Path:
    """A copy of the finished fake run, in ``folder/run``, optionally damaged."""
    shutil.copytree(_GOOD_RUN["dir"], folder / "run")
    shutil.copytree(_GOOD_RUN["dir"].parent / "data", folder / "data", dirs_exist_ok=True)
    shutil.copy(_GOOD_RUN["dir"].parent / "c.yaml", folder / "c.yaml")
    if damage:
        damage(folder / "run")
    return folder / "run"


_GOOD_RUN: dict[str, Path] = {}


def on_run(damage: Callable[[Path], None], *command: str) -> Callable[[Path], list[str]]:
    """``command`` (with RUN and CONFIG filled in) on a copy of a finished run, damaged first."""

    def make(folder: Path) -> list[str]:
        run_dir = finished_run(folder, damage)
        # CONFIG: the config the run was made with (its paths point at the good run's data).
        named = {"RUN": str(run_dir), "CONFIG": str(_GOOD_RUN["dir"].parent / "c.yaml"), "OUT": str(folder / "afile" / "table.md")}
        return [named.get(part, part) for part in command]

    return make


def truncate(name: str, keep: int = 20) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).write_bytes((run_dir / name).read_bytes()[:keep])


def replace_line(name: str, number: int, text: str | bytes) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        lines = (run_dir / name).read_bytes().split(b"\n")
        lines[number - 1] = text if isinstance(text, bytes) else text.encode()
        (run_dir / name).write_bytes(b"\n".join(lines))

    return damage


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).write_bytes(content)


def files(**contents: bytes | str) -> Callable[[Path], None]:
    """Make files in the case folder (a model that is a text file, a corrupt .gguf...)."""

    def make(folder: Path) -> None:
        for name, content in contents.items():
            path = folder / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return make


def with_files(make_files: Callable[[Path], None], make_args: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        make_files(folder)
        return make_args(folder)

    return make


# ---- a fake endpoint: an HTML portal, a JSON API listing other models, a 401 -------------


class _Endpoint(http.server.BaseHTTPRequestHandler):
    def _reply(self) -> None:
        if self.path.startswith("/html/"):
            body, kind, status = b"<html><body>Welcome to the hotel wifi</body></html>", "text/html", 200
        elif self.path.startswith("/auth/"):
            body, kind, status = b'{"error": {"message": "bad key"}}', "application/json", 401
        else:
            body, kind, status = b'{"object": "list", "data": [{"id": "other-model"}]}', "application/json", 200
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _reply

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply()

    def log_message(self, *args: object) -> None:
        pass


ENDPOINT = "http://127.0.0.1:{port}"  # "{port}" is filled in when the fake endpoint runs
_PORT: dict[str, int] = {}


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]
    #: Strings the error line must contain; "{dir}" is the case's folder, "{port}" the fake endpoint's.
    needles: tuple[str, ...]
    midrun: bool = False
    env: dict[str, str] = field(default_factory=dict)


def serve_at(kind: str, *extra: str, model: str = "gpt-x") -> Callable[[Path], list[str]]:
    changes = {"instructor": {"backend": "openai", "base_url": ENDPOINT + f"/{kind}/v1", "model": model}}
    return lambda f: ["validate", config(f, changes), "--online", *extra]


LATIN1_ROW = b'{"question": "Caf\xe9 sells 3 cakes. How many?", "answer": "#### 3"}\n'
ARC_UNREADABLE = jsonl([{"id": "bad_row_1", "question": "Which?", "answer": "Z", "A": "x", "B": "y"}])
ARC_BENCH = {"evaluate": {"benchmarks": [{"task": "arc_challenge", "pool": "test", "path": "data/arc.jsonl"}]}}
GGUF_JUNK = b"PK\x03\x04 this is a zip, not a gguf"

CASES: list[Case] = [
    # -- the config file itself -------------------------------------------------------------
    Case("config missing", lambda f: ["validate", str(f / "nope.yaml")], ("config file not found", "nope.yaml")),
    Case("config is a folder", lambda f: ["validate", str(f)], ("is a folder", "{dir}")),
    Case("config is binary", lambda f: _binary_config(f), ("c.yaml", "not UTF-8")),
    Case("config latin-1", lambda f: _latin1_config(f), ("c.yaml:2", "not UTF-8", "0xe9")),
    Case("config bad YAML", validate_text("name: [unclosed\n"), ("c.yaml", "not valid YAML")),
    Case("config is a list", validate_text("- a\n- b\n"), ("c.yaml", "mapping")),
    Case("duplicate top-level key", validate_text("name: a\nseed: 1\nname: b\n"), ("c.yaml", "'name' appears twice", "line 3")),
    Case("duplicate nested key", validate_text("train:\n  epochs: 1\n  epochs: 2\n"), ("c.yaml", "'epochs' appears twice")),
    Case("unknown key", validate({"train": {"learing_rate": 0.1}}), ("train.learing_rate", "unknown key")),
    Case("seed: true", validate({"seed": True}), ("seed", "not true")),
    Case("iterations: yes", validate({"iterations": True}), ("iterations", "not true")),
    Case("learning_rate: false", validate({"train": {"learning_rate": False}}), ("train.learning_rate", "not false")),
    Case("batch_size: true", validate({"target": {"batch_size": True}}), ("target.batch_size",)),
    Case("iterations 10^12", validate({"iterations": 10**12}), ("iterations", "typo")),
    Case("learning_rate 1e30", validate({"train": {"learning_rate": 1e30}}), ("train.learning_rate", "diverge")),
    Case("max_steps -5", validate({"train": {"max_steps": -5}}), ("train.max_steps", "-1")),
    Case("max_steps 0", validate({"train": {"max_steps": 0}}), ("train.max_steps",)),
    Case("epochs 10^6", validate({"train": {"epochs": 10**6}}), ("train.epochs",)),
    Case("budget 10^9", validate({"strategy": {"budget": 10**9}}), ("strategy.budget",)),
    Case("concurrency 10^6", validate({"instructor": {"concurrency": 10**6}}), ("instructor.concurrency",)),
    Case("learning_rate text", validate({"train": {"learning_rate": "fast"}}), ("train.learning_rate",)),
    Case("temperature 5", validate({"instructor": {"temperature": 5}}), ("instructor.temperature",)),
    Case("name empty", validate({"name": ""}), ("name", "--run-dir")),
    Case("name escapes runs/", validate({"name": "../../x"}), ("name", "../../x")),
    Case("name with a slash", validate({"name": "a/b"}), ("name", "a/b")),
    Case("name ..", validate({"name": ".."}), ("name",)),
    Case("base_url ftp", validate({"instructor": {"backend": "openai", "base_url": "ftp://example.com/v1"}}), ("instructor.base_url", "ftp://example.com/v1")),
    Case("base_url without scheme", validate({"instructor": {"backend": "openai", "base_url": "api.openai.com/v1"}}), ("instructor.base_url", "http")),
    Case("base_url not a url", validate({"instructor": {"backend": "openai", "base_url": "not a url at all"}}), ("instructor.base_url", "not a url at all")),
    Case("base_url without host", validate({"instructor": {"backend": "openai", "base_url": "http://"}}), ("instructor.base_url",)),
    Case("base_url port out of range", validate({"instructor": {"backend": "openai", "base_url": "http://127.0.0.1:99999/v1"}}), ("instructor.base_url", "port")),
    Case("base_url port 0", validate({"instructor": {"backend": "openai", "base_url": "http://127.0.0.1:0/v1"}}), ("instructor.base_url", "port")),
    Case("seed of 5,000 digits", validate_text("seed: " + "9" * 5000 + "\n"), ("c.yaml", "4,300 digits")),
    Case("YAML nested 5,000 deep", validate_text("seed: " + "[" * 5000 + "]" * 5000 + "\n"), ("c.yaml",)),
    Case("--set seed of 5,000 digits", validate(None, "--set", "seed=" + "9" * 5000), ("seed",)),
    Case("launcher that does not exist", validate({"instructor": {"backend": "openai", "local": {"enabled": True, "launcher": ["/nope/python", "-m", "x"]}}}), ("instructor.local.launcher", "/nope/python")),
    Case("no base_url", validate({"instructor": {"backend": "openai"}}), ("instructor.base_url", "required")),
    Case("api key pasted as the env name", validate({"instructor": {"backend": "openai", "base_url": "https://x.example/v1", "api_key_env": "sk-abc123"}}), ("api_key_env", "NAME")),
    Case("no benchmarks", validate({"evaluate": {"benchmarks": []}}), ("evaluate.benchmarks", "at least one")),
    Case("no pools", validate({"select": {"pools": []}}), ("select.pools", "at least one")),
    Case("pool n 0", validate({"select": {"pools": [{"task": "gsm8k", "n": 0, "path": "data/train.jsonl"}]}}), ("select.pools.0.n",)),
    Case("pool n 10^9", validate({"select": {"pools": [{"task": "gsm8k", "n": 10**9, "path": "data/train.jsonl"}]}}), ("select.pools.0.n", "1000000")),
    Case("unknown task", validate({"select": {"pools": [{"task": "gsm9k"}]}}), ("select.pools", "gsm9k")),
    Case("unknown pool", validate({"evaluate": {"benchmarks": [{"task": "gsm8k", "pool": "dev"}]}}), ("evaluate.benchmarks", "'dev'")),
    Case("unknown strategy", validate({"strategy": {"name": "lecc"}}), ("strategy.name", "lecc")),
    Case("unknown target backend", validate({"target": {"backend": "hff"}}), ("target.backend", "hff")),
    Case("extends a missing file", validate_text("extends: nope.yaml\n"), ("config file not found", "nope.yaml")),
    Case("extends itself", lambda f: ["validate", config(f, text="extends: c.yaml\n")], ("extends itself",)),
    Case("extends not a path", validate_text("extends: [a, b]\n"), ("c.yaml", "extends")),
    Case("--set without =", lambda f: ["validate", config(f), "--set", "seed"], ("--set", "key.path=value")),
    Case("--set bool as number", lambda f: ["validate", config(f), "--set", "seed=true"], ("seed", "not true")),
    Case("--set unknown key", lambda f: ["validate", config(f), "--set", "train.nope=1"], ("train.nope", "unknown key")),
    Case("strict loading typo'd as text", validate({"strict_loading": "sometimes"}), ("strict_loading",)),
    # -- data files --------------------------------------------------------------------------
    Case("pool file missing", validate({"select": {"pools": [{"task": "gsm8k", "n": 2, "path": "data/none.jsonl"}]}}), ("not found", "{dir}/data/none.jsonl")),
    Case("pool file is a folder", validate({"select": {"pools": [{"task": "gsm8k", "n": 2, "path": "data"}]}}), ("{dir}/data", "is a folder")),
    Case("empty data file", data_case(""), ("{dir}/data/train.jsonl", "no rows")),
    Case("blank-lines data file", data_case("\n\n  \n"), ("{dir}/data/train.jsonl", "no rows")),
    Case("latin-1 byte in data", data_case(jsonl(TRAIN[:1]).encode() + LATIN1_ROW), ("{dir}/data/train.jsonl:2", "not UTF-8")),
    Case("binary data file", data_case(b"\x00\x01\x02\xff\xfe" * 20), ("{dir}/data/train.jsonl", "not UTF-8")),
    Case("malformed JSON line", data_case(jsonl(TRAIN[:2]) + '{"question": "x", "answer": \n'), ("{dir}/data/train.jsonl:3", "not valid JSON")),
    Case("JSON array file", data_case("[\n" + json.dumps(TRAIN[0]) + "\n]\n"), ("{dir}/data/train.jsonl:1", "JSON")),
    Case("row is not an object", data_case(jsonl(TRAIN[:1]) + "42\n"), ("{dir}/data/train.jsonl:2", "JSON object")),
    Case("row missing a field", data_case(jsonl([*TRAIN[:3], {"question": "q"}])), ("{dir}/data/train.jsonl:4", "'answer'")),
    Case("row with null answer", data_case(jsonl([{"question": "q", "answer": None}])), ("{dir}/data/train.jsonl:1", "null", "'answer'")),
    Case("row with a number as question", data_case(jsonl([{"question": 42, "answer": "#### 1"}])), ("{dir}/data/train.jsonl:1", "'question'", "text")),
    Case("number over 4,300 digits in data", data_case(jsonl(TRAIN[:1]) + '{"question": "q", "answer": "#### 1", "x": ' + "9" * 5000 + "}\n"), ("{dir}/data/train.jsonl:2", "4,300 digits")),
    Case("data row nested 100,000 deep", data_case(jsonl(TRAIN[:1]) + "[" * 100000 + "\n"), ("{dir}/data/train.jsonl:2", "nested too deep")),
    Case("lone surrogate in data", data_case(jsonl(TRAIN[:2]) + '{"question": "\\ud800 apples", "answer": "#### 1"}\n'), ("{dir}/data/train.jsonl:3", "surrogate")),
    Case("GSM8K row without '#### N', strict", with_files(files(**{"data__nohash.jsonl": jsonl([*TRAIN, {"question": "q", "answer": "He eats 32."}])}), validate({"strict_loading": True, "select": {"pools": [{"task": "gsm8k", "n": 2, "path": "data/nohash.jsonl"}]}})), ("{dir}/data/nohash.jsonl", "row 12", "#### N")),
    Case("row with a list as answer", data_case(jsonl([*TRAIN, {"question": "q", "answer": [1]}])), ("{dir}/data/train.jsonl:13", "'answer'")),
    Case("bad benchmark row", data_case(jsonl([*TEST, {"question": "q"}]), "test"), ("{dir}/data/test.jsonl:4", "'answer'")),
    Case("pool smaller than n", validate({"select": {"pools": [{"task": "gsm8k", "n": 50, "path": "data/train.jsonl"}]}}), ("select.pools[0].n", "12")),
    Case("pool smaller than n x iterations", validate({"iterations": 4}), ("select.pools[0].n", "16 rows")),
    Case("data folder missing", validate({"data_dir": "no-such-folder", "select": {"pools": [{"task": "gsm8k", "n": 2}]}}), ("data_dir", "no-such-folder", "does not exist")),
    Case("data folder is a file", with_files(files(**{"afile": "x"}), validate({"data_dir": "afile"})), ("data_dir", "{dir}/afile", "a file")),
    Case("unreadable ARC row, strict", with_files(files(**{"data__arc.jsonl": ARC_UNREADABLE}), validate({"strict_loading": True, **ARC_BENCH})), ("{dir}/data/arc.jsonl", "bad_row_1", "strict")),
    Case("ARC row of the wrong type", with_files(files(**{"data__arc.jsonl": jsonl([{"id": ["x"], "question": "q"}])}), validate(ARC_BENCH)), ("{dir}/data/arc.jsonl:1", "'id'")),
    # -- models ------------------------------------------------------------------------------
    Case("target model is a text file", with_files(files(**{"notes.txt": "hello"}), validate({"target": {"backend": "hf", "model": "notes.txt"}})), ("target.model", "{dir}/notes.txt", "not a model")),
    Case("target model corrupt gguf", with_files(files(**{"m.gguf": GGUF_JUNK}), validate({"target": {"backend": "hf", "model": "m.gguf"}})), ("target.model", "{dir}/m.gguf", "not a GGUF")),
    Case("target model gguf missing", validate({"target": {"backend": "hf", "model": "gone.gguf"}}), ("target.model", "{dir}/gone.gguf", "not found")),
    Case("target model folder without config", with_files(files(**{"mdl__weights.bin": b"0"}), validate({"target": {"backend": "hf", "model": "./mdl"}})), ("target.model", "{dir}/mdl", "config.json")),
    Case("target model path missing", validate({"target": {"backend": "hf", "model": "./nowhere"}}), ("target.model", "does not exist")),
    Case("unknown embedded target", validate({"target": {"backend": "hf", "model": "embedded:gpt-17"}}), ("gpt-17", "embedded")),
    Case("local instructor text file", with_files(files(**{"inst.txt": "x"}), validate({"instructor": {"backend": "openai", "local": {"enabled": True, "model": "inst.txt"}}})), ("instructor.local.model", "{dir}/inst.txt")),
    Case("local instructor gguf missing", validate({"instructor": {"backend": "openai", "local": {"enabled": True, "model": "/nope/model.gguf"}}}), ("instructor.local.model", "/nope/model.gguf", "not found")),
    Case("llama_cpp given a folder", with_files(files(**{"hfm__config.json": "{}"}), validate({"instructor": {"backend": "openai", "local": {"enabled": True, "model": "./hfm"}}})), ("instructor.local.model", "llama_cpp", ".gguf")),
    # -- embedders and the API key -----------------------------------------------------------
    Case("unknown embedded embedder", validate({"strategy": {"embedder": "embedded:nope"}}), ("strategy.embedder", "nope")),
    Case("embedder path missing", validate({"verify": {"embedder": "/no/such/embedder"}}), ("verify.embedder", "/no/such/embedder")),
    Case("embedder folder without a model", with_files(files(**{"emb__x.txt": "x"}), validate({"verify": {"embedder": "./emb"}})), ("verify.embedder", "modules.json")),
    Case("embedder not cached offline", validate({"verify": {"embedder": "some-org/not-cached-embedder"}}), ("verify.embedder", "some-org/not-cached-embedder", "HF_HUB_OFFLINE"), env={"HF_HUB_OFFLINE": "1"}),
    Case("API key variable unset", validate({"instructor": {"backend": "openai", "base_url": "https://x.example/v1", "api_key_env": "LAI_TEST_UNSET_KEY"}}), ("LAI_TEST_UNSET_KEY", "not set")),
    # -- the endpoint (lai validate --online, lai run) ---------------------------------------
    Case("endpoint unreachable", lambda f: ["validate", config(f, {"instructor": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}), "--online"], ("127.0.0.1:9", "unreachable")),
    Case("endpoint is a web page", serve_at("html"), ("127.0.0.1:{port}/html/v1", "text/html", "/v1")),
    Case("endpoint lacks the model", serve_at("json", model="gpt-x"), ("'gpt-x'", "other-model")),
    Case("endpoint rejects the key", serve_at("auth"), ("127.0.0.1:{port}/auth/v1", "API key")),
    Case("run against a web page", lambda f: ["run", config(f, {"instructor": {"backend": "openai", "base_url": ENDPOINT + "/html/v1", "model": "gpt-x", "max_retries": 0}}), "--run-dir", str(f / "r")], ("127.0.0.1:{port}/html/v1", "text/html"), midrun=True),
    # -- run directories and outputs --------------------------------------------------------
    Case("run dir is a file", with_files(files(**{"afile": "x"}), lambda f: ["run", config(f), "--run-dir", str(f / "afile")]), ("{dir}/afile", "is a file")),
    Case("run dir under a file", with_files(files(**{"afile": "x"}), lambda f: ["run", config(f), "--run-dir", str(f / "afile" / "r")]), ("{dir}/afile", "is a file")),
    Case("--run-dir '' in a busy folder", lambda f: ["run", config(f), "--run-dir", ""], ("other files", "no lai run")),
    Case("run dir holds other files", with_files(files(**{"busy__notes.txt": "mine"}), lambda f: ["run", config(f), "--run-dir", str(f / "busy")]), ("{dir}/busy", "other files")),
    Case("validate: run dir is a file", with_files(files(**{"afile": "x"}), lambda f: ["validate", config(f), "--run-dir", str(f / "afile")]), ("{dir}/afile", "is a file")),
    Case("truncated manifest", on_run(truncate("manifest.json"), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/manifest.json", "damaged")),
    Case("empty stage marker", on_run(write("iter_01/collect.done", b""), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/iter_01/collect.done", "empty")),
    Case("bad record line", on_run(replace_line("iter_01/collect.jsonl", 2, "{not json"), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/iter_01/collect.jsonl:2", "damaged")),
    Case("record line not an object", on_run(replace_line("iter_01/collect.jsonl", 1, "[1, 2]"), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/iter_01/collect.jsonl:1", "JSON object")),
    Case("latin-1 in a record", on_run(replace_line("iter_01/selection.jsonl", 1, b'{"id": "caf\xe9"}'), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/iter_01/selection.jsonl:1", "not UTF-8")),
    Case("corrupt saved config, resume by dir", on_run(write("config.yaml", b"name: [broken\n"), "run", "--run-dir", "RUN"), ("{dir}/run/config.yaml", "YAML")),
    Case("corrupt saved config, with a config", on_run(write("config.yaml", b"name: [broken\n"), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/config.yaml", "damaged")),
    Case("corrupt eval.json", on_run(truncate("iter_00/eval.json", 5), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/iter_00/eval.json", "damaged")),
    Case("record with a 5,000-digit number", on_run(replace_line("iter_01/collect.jsonl", 1, '{"id": ' + "9" * 5000 + "}"), "run", "CONFIG", "--run-dir", "RUN"), ("{dir}/run/iter_01/collect.jsonl:1", "4,300 digits")),
    Case("resume with another config", on_run(lambda r: None, "run", "CONFIG", "--run-dir", "RUN", "--set", "seed=7"), ("different config (differs in: seed)",)),
    Case("report of a damaged run", on_run(truncate("manifest.json"), "report", "RUN"), ("{dir}/run/manifest.json", "damaged")),
    Case("compare a damaged run", on_run(truncate("manifest.json"), "compare", "RUN"), ("{dir}/run/manifest.json", "damaged")),
    Case("export a damaged run", on_run(write("iter_01/verified.jsonl", b'{"id": 1}\n{oops\n'), "export", "RUN", "OUT"), ("{dir}/run/iter_01/verified.jsonl:2", "damaged")),
    Case("export a folder that is no run", lambda f: ["export", str(f), str(f / "out")], ("{dir}", "not a lai run directory")),
    Case("compare a folder that is no run", lambda f: ["compare", str(f)], ("{dir}", "not a lai run directory")),
    Case("compare --out under a file", with_files(files(**{"afile": "x"}), on_run(lambda r: None, "compare", "RUN", "--out", "OUT")), ("{dir}/afile",)),
    # -- lai eval and serve-instructor ---------------------------------------------------------
    Case("eval --tasks ''", lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", "", "--out", str(f / "e")], ("--tasks", "no task")),
    Case("eval --tasks ' , '", lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", " , ", "--out", str(f / "e")], ("--tasks", "no task")),
    Case("eval --out into a run", lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", "gsm8k", "--limit", "1", "--out", str(finished_run(f))], ("{dir}/run", "folder of a lai run")),
    Case("eval unknown task", lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", "gsm9k", "--out", str(f / "e")], ("gsm9k",)),
    Case("eval --model text file", with_files(files(**{"notes.txt": "x"}), lambda f: ["eval", "--model", str(f / "notes.txt"), "--tasks", "gsm8k", "--out", str(f / "e")]), ("--model", "{dir}/notes.txt")),
    Case("eval --out under a file", with_files(files(**{"afile": "x"}), lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", "gsm8k", "--out", str(f / "afile" / "e")]), ("{dir}/afile", "is a file")),
    Case("eval --scoring typo", lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", "gsm8k", "--scoring", "logprob", "--out", str(f / "e")], ("--scoring", "logprob")),
    Case("eval --pool typo", lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", "gsm8k", "--pool", "dev", "--out", str(f / "e")], ("gsm8k", "'dev'")),
    Case("eval latin-1 data", with_files(files(**{"d__gsm8k__test.jsonl": LATIN1_ROW}), lambda f: ["eval", "--model", "m", "--backend", "scripted", "--tasks", "gsm8k", "--data-dir", str(f / "d"), "--out", str(f / "e")]), ("{dir}/d/gsm8k/test.jsonl:1", "not UTF-8")),
    Case("compare --out is a folder", with_files(lambda f: (f / "outdir").mkdir(), lambda f: ["compare", str(finished_run(f)), "--out", str(f / "outdir")]), ("{dir}/outdir", "folder")),
    Case("unknown command", lambda f: ["rnu"], ("rnu", "--help")),
    Case("missing argument", lambda f: ["report"], ("Missing argument", "report --help")),
    Case("--max-cost not a number", lambda f: ["run", "x.yaml", "--max-cost", "abc"], ("'--max-cost'", "valid number", "run --help")),
    Case("serve-instructor unbalanced quote", lambda f: ["serve-instructor", "org/m", "--server", "vllm", "--launcher", '"/nope/python'], ("--launcher", "quotation")),
    Case("serve-instructor missing gguf", lambda f: ["serve-instructor", "/nope/model.gguf"], ("/nope/model.gguf", "not found")),
    Case("serve-instructor text file", with_files(files(**{"notes.txt": "x"}), lambda f: ["serve-instructor", str(f / "notes.txt")]), ("{dir}/notes.txt", "not a model")),
    Case("serve-instructor --log under a file", with_files(files(**{"afile": "x", "m.gguf": b"GGUF\x03\x00\x00\x00"}), lambda f: ["serve-instructor", str(f / "m.gguf"), "--log", str(f / "afile" / "x.log")]), ("{dir}/afile", "is a file")),
]


def _binary_config(folder: Path) -> list[str]:
    write_data(folder)
    (folder / "c.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    return ["validate", str(folder / "c.yaml")]


def _latin1_config(folder: Path) -> list[str]:
    write_data(folder)
    (folder / "c.yaml").write_bytes(b"# settings\n# caf\xe9 run\nname: x\n")
    return ["validate", str(folder / "c.yaml")]


@dataclass
class Outcome:
    folder: Path
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, bytes]
    after: dict[str, bytes]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_forked(args: list[str], cwd: Path, env: dict[str, str], out: Path) -> int:
    """Start ``lai ARGS`` as a forked child of this (already importing) process; return its
    pid (tests/helpers/forked_cli.py). The cases' environment never has the unset key."""
    return start_forked(args, cwd, out, env, before=lambda: os.environ.pop("LAI_TEST_UNSET_KEY", None))


@pytest.fixture(scope="session")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    for module in ("lai.cli", "lai.eval_command", "lai.pipeline", "lai.preflight"):
        importlib.import_module(module)  # imported once here, shared by the forked cases

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    port = server.server_address[1]
    _PORT["port"] = port
    try:
        good = tmp_path_factory.mktemp("good")
        good_streams = tmp_path_factory.mktemp("good-streams")  # forked like the cases
        good_pid = run_forked(["run", config(good), "--run-dir", str(good / "run")], good, {}, good_streams)
        assert os.waitstatus_to_exitcode(os.waitpid(good_pid, 0)[1]) == 0, (good_streams / "stderr").read_text()
        _GOOD_RUN["dir"] = good / "run"

        prepared = []
        for case in CASES:
            folder = tmp_path_factory.mktemp("case")
            args = case.make(folder)
            for path in folder.glob("*.yaml"):  # the fake endpoint's port is known only now
                path.write_bytes(path.read_bytes().replace(b"{port}", str(port).encode()))
            streams = tmp_path_factory.mktemp("streams")
            prepared.append((case, folder, args, streams, snapshot(folder)))
        # At most four at once; each child is waited for by its pid (os.wait would reap
        # processes other tests started), the oldest first.
        running: list[tuple[int, int]] = []
        codes: dict[int, int] = {}

        def reap_oldest() -> None:
            pid, index = running.pop(0)
            codes[index] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

        try:
            for index, (case, folder, args, streams, _) in enumerate(prepared):
                if len(running) >= 4:
                    reap_oldest()
                running.append((run_forked(args, folder, case.env, streams), index))
        finally:  # whatever happened, no child is left behind
            while running:
                reap_oldest()
        yield {
            case.name: Outcome(
                folder, codes[index], (streams / "stdout").read_text(errors="replace"),
                (streams / "stderr").read_text(errors="replace"), before, snapshot(folder),
            )  # fmt: skip
            for index, (case, folder, _, streams, before) in enumerate(prepared)
        }
    finally:
        server.shutdown()
        server.server_close()


def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 80
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_naming_the_fix(case: Case, outcomes: dict[str, Outcome]) -> None:
    out = outcomes[case.name]
    port = str(_PORT["port"])
    assert out.returncode == 2, f"exit {out.returncode}\n{out.stderr}"
    assert "Traceback" not in out.stderr + out.stdout
    assert "internal error" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    if case.midrun:
        assert lines and lines[-1].startswith("error:"), out.stderr
        assert sum(line.startswith("error:") for line in lines) == 1, out.stderr
    else:
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{out.stderr}"
    error = lines[-1]
    assert error.startswith("error: "), error
    for needle in case.needles:
        expected = needle.replace("{dir}", str(out.folder)).replace("{port}", port)
        assert expected in error, f"{expected!r} not in {error!r}"
    # Nothing that was there before changed; a run under way may only append records.
    for name, content in out.before.items():
        after = out.after.get(name)
        assert after is not None, f"{name} was deleted"
        if case.midrun and name.endswith(".jsonl"):
            assert after.startswith(content), f"{name}: earlier records changed"
        elif not (case.midrun and name.rsplit("/", 1)[-1] in ("manifest.json",)):
            assert after == content, f"{name} changed"
    # A refused command makes no runs/ folder of its own.
    assert not (out.folder / "runs").exists()
