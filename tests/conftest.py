from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

# Tests never reach a hub: everything they load is local or shipped in a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.helpers import leftovers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Tiny synthetic benchmark files in the repository (tests/fixtures/make_data.py): the
    fast tier runs on them, so it needs nothing outside the checkout."""
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real benchmark samples in ../shared/data, for the (slow) tests that need real
    rows; skipped, saying why, where that folder is absent."""
    if not (SHARED_DATA / "gsm8k" / "train.jsonl").exists():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (see ../shared/data/SOURCES.md)")
    return SHARED_DATA


def pytest_configure(config: pytest.Config) -> None:
    leftovers.adopt_orphans()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every process a test started must be gone by now (see tests/helpers/leftovers.py)."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: its controller checks
        return
    found = leftovers.leftovers()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n".join(f"  {line}" for line in found)
        message = f"processes started by the tests were still running at the end (now killed):\n{lines}"
        if reporter is not None:
            reporter.write_line(message, red=True)
        else:
            print(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


#: Fixtures whose tests are slow by definition: real benchmark rows (../shared/data) and a
#: model loaded through transformers (even a random tiny one pays torch's load and compile).
SLOW_FIXTURES = {"shared_data_dir", "tiny_model_dir"}


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@functools.cache
def has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Asked when a gpu test is about to run, not at collection: importing torch to find out
    # costs seconds that a run without gpu tests (the fast tier) has no use for.
    if "gpu" in item.keywords and not has_gpu():
        pytest.skip("needs a CUDA GPU")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (hidden 64) with SmolLM2's tokenizer and chat template, read
    from the GGUF file the embedded model ships in: real code paths in seconds."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lai.locate import embedded_gguf

    try:
        gguf = embedded_gguf("smollm2-135m-instruct")
    except Exception as error:  # noqa: BLE001 - any failure means the package is unusable here
        pytest.skip(f"embedded model package missing: {error}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
