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


def random_checkpoint(tmp_path_factory, preset: str, seed: int) -> str:
    out = tmp_path_factory.mktemp(preset)
    make_checkpoint(out, preset, seed=seed, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A random checkpoint of the tiny preset (real vocabulary and tokenizer files)."""
    return random_checkpoint(tmp_path_factory, "tiny", seed=5)


@pytest.fixture(scope="module")
def narrow(tmp_path_factory) -> str:
    """A random checkpoint of the narrow preset (the published head sizes: every op of a step has its kernel)."""
    return random_checkpoint(tmp_path_factory, "narrow", seed=3)


@pytest.fixture(scope="module")
def model(tiny) -> Qwen3NextCUDA:
    """The tiny checkpoint on the CPU in fp32."""
    return Qwen3NextCUDA.from_pretrained(tiny, device="cpu", progress=False)
