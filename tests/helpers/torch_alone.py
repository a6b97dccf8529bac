"""Source to run first in a fresh interpreter so that the OpenMMLab
packages cannot be imported, as on a machine with torch alone."""
BLOCK_OPENMMLAB = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmengine', 'mmdet', 'mmseg'):
            raise ModuleNotFoundError(f'blocked {name}', name=name)
sys.meta_path.insert(0, Block())
"""
