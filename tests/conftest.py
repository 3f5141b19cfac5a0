import pytest
import torch

from qwen3next_cuda import Qwen3NextCUDA
from qwen3next_cuda.tools.make_checkpoint import make_checkpoint


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A random checkpoint of the tiny preset (real vocabulary and tokenizer files)."""
    out = tmp_path_factory.mktemp("tiny")
    make_checkpoint(out, "tiny", seed=5, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def model(tiny) -> Qwen3NextCUDA:
    """The tiny checkpoint on the CPU in fp32."""
    return Qwen3NextCUDA.from_pretrained(tiny, device="cpu", progress=False)
