import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_path(*parts: str) -> Path:
    """Path inside ../shared; skip only when not in CI and shared/ is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{p} is required in CI (../shared must sit beside the repo)")
        pytest.skip(f"{p} not available outside CI")
    return p


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A complete tiny model directory (weights, InternLM2-style tokenizer, processor) built the
    way a user would: official layout converted by the production converter."""
    from tests.helpers import build_chat_model_dir

    return build_chat_model_dir(tmp_path_factory.mktemp("chat_model"), seed=3)
