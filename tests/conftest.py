import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, 'helpers')]

# Without a GPU, the Triton backend's kernels run on CPU tensors in
# Triton's interpreter, which reads this before Triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
