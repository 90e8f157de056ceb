"""Whole-detector latency in result summaries: RTMDet/YOLOX runs against the detector benchmark.

``tools/benchmark_detector.py`` (:mod:`mmext.benchmark.detector`) writes rows per config, part
(``network`` / ``predict``) and backbone mode (``eager`` / ``deploy``). A summary joins them to the
runs of the work dirs on the **config name**: the stem of the config file a run was started
from (``shvit_s1_rtmdet_tiny_4xb32-100e_coco``; mmengine's Runner dumps that file into the work
dir) against the stem of the benchmark row's ``config`` (a path or ``mmdet::<path>``).

Which rows give ``detector_ms``:

* part ``network`` by default (``--detector-part predict`` for the other): backbone, neck and
  head, no post-processing. That is the latency RTMDet and YOLOX themselves report (RTMDet's
  table is "without NMS"), and it does not depend on the weights; ``predict`` adds decoding and
  NMS, whose cost with the benchmark's random weights is set by how many boxes an untrained
  head lets through, not by the trained model whose AP is in the table.
* mode ``deploy`` (the backbone fused) preferred, like the backbone join; a config without a
  deploy row (mmdet's own backbones have nothing to fuse) falls back to its ``eager`` row, and
  ``detector_setting`` says which one was used.

mmdet's own RTMDet/YOLOX results (its model zoo, read from the metafiles shipped with mmdet 3.3)
are reference rows (``source='mmdet'``); they get a ``detector_ms`` too when the benchmark timed
their configs (``mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py``), on the same machine as the runs.
"""
import json
import os.path as osp

from mmext.errors import ConfigError

PARTS = ('network', 'predict')
MODES = ('deploy', 'eager')
DETECTOR_ROW_KEYS = ('config', 'part', 'mode', 'status')  # skipped rows have no median_ms
# mmdet 3.3's model zoo (COCO val2017 box AP, the metafiles' "box AP", 300-epoch recipes).
MMDET_REFERENCE = 'mmdet 3.3 model zoo (metafile, 300 epochs)'
MMDET_RESULTS = [
    dict(model='RTMDet-tiny', config='rtmdet_tiny_8xb32-300e_coco', task='RTMDet',
         bbox_mAP=40.9),
    dict(model='RTMDet-s', config='rtmdet_s_8xb32-300e_coco', task='RTMDet', bbox_mAP=44.5),
    dict(model='YOLOX-tiny', config='yolox_tiny_8xb8-300e_coco', task='YOLOX', bbox_mAP=32.0),
    dict(model='YOLOX-s', config='yolox_s_8xb8-300e_coco', task='YOLOX', bbox_mAP=40.5),
]


def config_key(spec):
    """``'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'`` -> ``'rtmdet_tiny_8xb32-300e_coco'``."""
    if not spec:
        return None
    name = osp.basename(str(spec).split('::')[-1])
    return name[:-3] if name.endswith('.py') else name


def is_detector_json(data):
    """Whether parsed JSON is a detector benchmark (``{'rows': [...]}``, rows with config+part)."""
    rows = data.get('rows') if isinstance(data, dict) else data
    return (isinstance(rows, list) and bool(rows) and
            all(isinstance(r, dict) and 'config' in r and 'part' in r for r in rows))


def split_benchmark_files(paths):
    """``(backbone_rows, detector_rows)`` of benchmark JSON files of either kind.

    A file whose rows carry ``config`` and ``part`` is a detector benchmark; anything else goes
    to :func:`mmext.benchmark.report.load_results`, which names what is wrong with a bad file.
    """
    from mmext.benchmark.report import load_results
    if not paths:
        return [], []
    if isinstance(paths, str):
        paths = [paths]
    backbone, detector = [], []
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = None
        if data is None or not is_detector_json(data):
            backbone += load_results(path)
            continue
        rows = data['rows'] if isinstance(data, dict) else data
        for i, row in enumerate(rows):
            missing = [k for k in DETECTOR_ROW_KEYS if k not in row]
            if missing:
                raise ConfigError(f'{path!r} is not a detector benchmark JSON: row {i} lacks '
                                  f'{", ".join(missing)}; write one with '
                                  'tools/benchmark_detector.py.')
        detector += rows
    return backbone, detector


def check_choice(part, mode):
    if part not in PARTS:
        raise ConfigError(f'--detector-part must be one of {", ".join(PARTS)}, not {part!r}.')
    if mode not in MODES:
        raise ConfigError(f'--detector-mode must be one of {", ".join(MODES)}, not {mode!r}.')


def detector_latency_table(rows, part='network', mode='deploy'):
    """``config name -> dict(detector_ms, detector_gflops, detector_setting)``.

    Rows of ``part`` that timed fine; ``mode`` preferred, else the config's ``eager`` row.
    """
    check_choice(part, mode)
    ok = [r for r in rows if r.get('status') == 'ok' and r.get('median_ms') is not None and
          r.get('part') == part]
    table = {}
    for wanted in (mode, 'eager'):
        for r in ok:
            key = config_key(r['config'])
            if r.get('mode') == wanted and key not in table:
                threads = r.get('threads')
                setting = ', '.join(str(s) for s in (
                    r.get('device_name', r.get('device')), r.get('input_size'),
                    f'{threads} thread' + ('s' if threads != 1 else '') if threads else None,
                    part, r['mode']) if s)
                table[key] = dict(detector_ms=r['median_ms'], detector_gflops=r.get('gflops'),
                                  detector_setting=setting)
    return table


def join_detector_latency(rows, detector_rows, part='network', mode='deploy'):
    """Set ``detector_ms`` ... on every row whose ``config`` the benchmark timed (in place).

    Returns the config names of the benchmark that matched no row.
    """
    table = detector_latency_table(detector_rows, part, mode)
    used = set()
    for row in rows:
        key = config_key(row.get('config'))
        if key in table:
            row.update(table[key])
            used.add(key)
    return sorted(set(table) - used)


def mmdet_rows():
    """mmdet's own RTMDet/YOLOX results as reference rows."""
    return [dict(source='mmdet', backbone=None, dataset='COCO', split='reported', work_dir=None,
                 timestamp=None, reference=MMDET_REFERENCE, **ref) for ref in MMDET_RESULTS]
