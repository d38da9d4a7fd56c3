import os

# Tests never reach the network: hub ids must fail fast and clearly.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from omnideft.families.registry import register_family  # noqa: E402

register_family("toy", "tests.families.toy:FAMILY")  # the proof family (tests/families/toy/): one folder, one line


def pytest_configure(config):
    # .ci/run re-runs the numeric tests with ATEN_CPU_CAPABILITY forced: make sure torch took that kernel family,
    # else the run would silently repeat the default one.
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    if wanted:
        import torch

        taken = torch.backends.cpu.get_cpu_capability()
        if taken.lower() != wanted.lower():
            raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={wanted} asked for, torch runs {taken} kernels")


@pytest.fixture(scope="session")
def tiny():
    from omnideft.families.omnigen.model import load_omnigen

    return load_omnigen("tiny")


@pytest.fixture(scope="session")
def metric_models(tmp_path_factory):
    """Tiny random CLIP, DINO, DINOv2, depth and aesthetic models saved to disk once (tests/metric_models.py)."""
    from tests.metric_models import save_all

    return save_all(tmp_path_factory.mktemp("metric_models"))


@pytest.fixture(scope="session")
def studio_world(tmp_path_factory):
    """Trained tiny adapters, an adapter of another base, a camera adapter, held-out and SfM shards, images."""
    from tests.studio_world import build_world

    return build_world(tmp_path_factory.mktemp("studio"))
