"""Idempotence for the generators: a stamp file records the parameters of a finished run."""
import json
import os
import os.path as osp
import shutil

STAMP = '.mmext_demo.json'


def read_stamp(root):
    path = osp.join(str(root), STAMP)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def prepare_root(root, params, expected_files, subdirs):
    """Return False when ``root`` already holds a complete set made with ``params``.

    Otherwise clear what a previous (different or interrupted) run left in ``subdirs``,
    create them, and return True. Folders holding files that no generator of ours wrote
    (no stamp) are never deleted: that raises FileExistsError instead.
    """
    root = str(root)
    stamp = read_stamp(root)
    if stamp == params and all(osp.isfile(osp.join(root, f)) for f in expected_files):
        return False
    if stamp is None:
        leftovers = [d for d in subdirs
                     if osp.isdir(osp.join(root, d)) and os.listdir(osp.join(root, d))]
        # An interrupted run of ours leaves no stamp but a '.partial' marker; without either,
        # the files are someone else's: refuse rather than delete them.
        if leftovers and not osp.isfile(osp.join(root, STAMP + '.partial')):
            raise FileExistsError(
                f'{root} already holds {leftovers} that were not written by mmext.demo; '
                'choose an empty folder for the demo data')
    for d in subdirs:
        shutil.rmtree(osp.join(root, d), ignore_errors=True)
    stamp_path = osp.join(root, STAMP)
    if osp.exists(stamp_path):
        os.remove(stamp_path)
    os.makedirs(root, exist_ok=True)
    # Marks the folders as ours while generation runs, so an interrupted run can be redone.
    with open(osp.join(root, STAMP + '.partial'), 'w') as f:
        json.dump(params, f)
    for d in subdirs:
        os.makedirs(osp.join(root, d), exist_ok=True)
    return True


def write_stamp(root, params):
    root = str(root)
    tmp = osp.join(root, STAMP + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(params, f, indent=1, sort_keys=True)
    os.replace(tmp, osp.join(root, STAMP))
    partial = osp.join(root, STAMP + '.partial')
    if osp.exists(partial):
        os.remove(partial)
