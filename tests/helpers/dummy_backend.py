"""A backend added to mmbcn.ops the documented way, and nothing more: one
module that declares a ``Backend`` with a priority and registers it with
``register_backend``. ``dummy`` serves every float CPU call of one process
in every mode, computing it with the reference backend's forward and
counting its calls, and ranks above every built-in backend in ``auto``.

Importing this module registers it; ``pytest -p dummy_backend`` (with
tests/helpers on the path) does so before collection, so that the
backend-parametrized tests run it (tests/test_backends.py)."""
from mmbcn.ops import BACKENDS, Backend, register_backend

CALLS = []


def forward(call):
    CALLS.append(call.mode)
    return BACKENDS['python'].forward(call)


BACKEND = register_backend(
    Backend('dummy', forward, devices={'cpu'}, synchronized=False,
            priority=100))
