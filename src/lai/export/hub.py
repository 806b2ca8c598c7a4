"""``lai export --push-to-hub``: the dataset and its card uploaded to a Hugging Face Hub repo.

Everything a push needs is checked before any work (:func:`hub_token`); the upload
happens only after the local export is complete (:func:`push`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lai.errors import LaiError
from lai.export.card import card_text


def hub_token(repo: str) -> str:
    """Check what a push needs before any work is done; the token itself is only ever passed on."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        raise LaiError(f"--push-to-hub {repo!r} is not a valid repo id: {' '.join(str(error).split())}") from None
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise LaiError(
            "--push-to-hub needs a Hugging Face token in the HF_TOKEN environment variable",
            hint="export HF_TOKEN=... (a token with write access); lai never stores it",
        )
    if constants.HF_HUB_OFFLINE:
        raise LaiError("cannot push to the Hub: HF_HUB_OFFLINE is set", hint="unset HF_HUB_OFFLINE to push")
    return token


def push(dataset: Any, metadata: dict[str, Any], body: str, repo: str, token: str, private: bool, out_dir: Path) -> None:
    """Upload the dataset, then the card with the Hub's own metadata (data files, features) kept."""
    from huggingface_hub import DatasetCard

    try:
        dataset.push_to_hub(repo, private=private, token=token, commit_message="lai export: training samples")
        try:
            hub_meta = DatasetCard.load(repo, repo_type="dataset", token=token).data.to_dict()
        except Exception:  # noqa: BLE001 - no card on the Hub yet: ours alone is fine
            hub_meta = {}
        merged = {**hub_meta, **metadata}
        DatasetCard(card_text(merged, body)).push_to_hub(
            repo, token=token, repo_type="dataset", commit_message="lai export: dataset card with provenance"
        )
    except Exception as error:  # noqa: BLE001 - network, auth and repo errors alike are the user's to fix
        detail = " ".join(str(error).split())[:300] or "no details"
        raise LaiError(
            f"pushing to the Hugging Face Hub repo {repo} failed ({type(error).__name__}: {detail}); "
            f"the local export in {out_dir} is complete",
            hint="check the network, HF_TOKEN and the repo name, then rerun",
        ) from None
