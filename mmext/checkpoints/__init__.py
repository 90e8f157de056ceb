"""Checkpoint layouts and the shared loader (see :mod:`mmext.checkpoints.loading`).

Each family's module registers its layouts (pure key-mapping functions) when imported here.
"""
from mmext.checkpoints.loading import (LAYOUTS, convert_checkpoint,  # noqa: F401
                                       convert_state_dict, extract_state_dict, load_pretrained,
                                       read_checkpoint)
from mmext.checkpoints import shvit  # noqa: F401
from mmext.checkpoints import efficientformer  # noqa: F401
from mmext.checkpoints import edgevit  # noqa: F401
from mmext.checkpoints import efficientformer_v2  # noqa: F401
