"""Checkpoint sources, layouts and the shared loader (see :mod:`mmext.checkpoints.loading`).

:mod:`~mmext.checkpoints.sources` turns a path or URL into a local file (download cache, hash
check, ``MMEXT_WEIGHTS_DIR``), :mod:`~mmext.checkpoints.zoo` lists the released weights.

Each family's module registers its layouts (pure key-mapping functions) when imported here.
"""
from mmext.checkpoints.loading import (LAYOUTS, convert_checkpoint,  # noqa: F401
                                       convert_state_dict, extract_state_dict, family_of,
                                       init_pretrained, load_pretrained, pretrained_entry,
                                       read_checkpoint)
from mmext.checkpoints.sources import resolve_checkpoint  # noqa: F401
from mmext.checkpoints.zoo import ZOO, get_weights  # noqa: F401
from mmext.checkpoints import shvit  # noqa: F401
from mmext.checkpoints import efficientformer  # noqa: F401
from mmext.checkpoints import edgevit  # noqa: F401
from mmext.checkpoints import efficientformer_v2  # noqa: F401
