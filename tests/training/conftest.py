import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models and thousands of small tensor operations: one thread is faster than several, and the suite
    shares the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
