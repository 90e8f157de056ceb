"""Results summary: real mmengine test runs (toy model, real Runner) + a benchmark JSON ->
markdown, CSV and a PNG plot with the papers' reference rows."""
import csv
import importlib.util
import os
import os.path as osp
import time

import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader, Dataset

from mmext.analysis import summarize as summ
from mmext.benchmark import run_benchmark, write_results

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core box more threads only spin against each other."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class ToyData(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return dict(inputs=torch.full((3, 8, 8), float(i)))


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.conv(inputs)
        return [dict(score=float(o.mean())) for o in out] if mode == 'predict' else out


class FixedMetric(BaseMetric):
    """Reports fixed values, under mmdet's ('coco/...') or mmseg's (no prefix) names."""

    def __init__(self, values, prefix=None):
        super().__init__(prefix=prefix)
        self.values = values

    def process(self, data_batch, data_samples):
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        return dict(self.values)


def real_test_run(work_dir, cfg, values, prefix, name):
    """Runner.test of a toy model; ``cfg`` is what the run records as its config."""
    # default_scope=None: no DefaultScope instance that later registry builds would pick up
    runner = Runner(model=ToyModel(), work_dir=str(work_dir), experiment_name=name,
                    default_scope=None,
                    test_dataloader=DataLoader(ToyData(), batch_size=1),
                    test_cfg=dict(), test_evaluator=Evaluator(FixedMetric(values, prefix)),
                    default_hooks=dict(checkpoint=None), cfg=cfg)
    return runner.test()


def det_cfg():
    return dict(model=dict(type='RetinaNet', backbone=dict(type='mmext.SHViT', arch='s1')),
                test_dataloader=dict(dataset=dict(type='CocoDataset')))


def seg_cfg():
    return dict(model=dict(type='EncoderDecoder', backbone=dict(type='EfficientFormerV2',
                                                                arch='s2'),
                           decode_head=dict(type='FPNHead')),
                test_dataloader=dict(dataset=dict(type='ADE20KDataset')))


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp('summary')
    work_dirs = root / 'work_dirs'
    det = real_test_run(work_dirs / 'retinanet' / 'shvit_s1_fpn_1x_coco', det_cfg(),
                        dict(bbox_mAP=0.312, bbox_mAP_50=0.5), 'coco', 'summ_det')
    seg = real_test_run(work_dirs / 'semfpn' / 'efficientformerv2_s2_fpn_40k_ade20k', seg_cfg(),
                        dict(mIoU=41.25, aAcc=80.0), None, 'summ_seg')
    assert det['coco/bbox_mAP'] == 0.312 and seg['mIoU'] == 41.25
    # a second model tested into the same work dir (same config file name, other folder)
    time.sleep(1.1)  # mmengine names run folders by the second
    mask_rcnn = det_cfg()
    mask_rcnn['model']['type'] = 'MaskRCNN'
    real_test_run(work_dirs / 'retinanet' / 'shvit_s1_fpn_1x_coco', mask_rcnn,
                  dict(bbox_mAP=0.33, segm_mAP=0.301), 'coco', 'summ_mask')
    rows = run_benchmark(archs='shvit_s1', protocols='cpu_latency_seg', modes='deploy',
                         tiny=True, compare_timm=False, reference=False, progress=False)
    bench_json = str(root / 'bench.json')
    write_results(rows, bench_json)
    return dict(root=root, work_dirs=str(work_dirs), bench=bench_json,
                latency=rows[0]['median_ms'])


def test_mmengine_wrote_what_summarize_reads(results):
    runs = [osp.join(d, ts) for d, dirs, _ in os.walk(results['work_dirs'])
            for ts in dirs if summ._TS.match(ts)]
    assert len(runs) == 3
    for run in runs:
        ts = osp.basename(run)
        assert osp.isfile(osp.join(run, f'{ts}.json'))  # Runner.test's metrics
        assert osp.isfile(osp.join(run, 'vis_data', 'config.py'))
        metrics, split = summ.read_run(run)
        assert split == 'test' and metrics


def test_collect_runs(results):
    runs = {(r['model'], r['task']): r for r in summ.collect_runs(results['work_dirs'])}
    assert len(runs) == 3
    det = runs['SHViT-S1', 'RetinaNet']
    mask = runs['SHViT-S1', 'Mask R-CNN']
    seg = runs['EfficientFormerV2-S2', 'Semantic FPN']
    assert (det['dataset'], det['bbox_mAP'], det['split']) == ('COCO', 31.2, 'test')
    assert (mask['bbox_mAP'], mask['segm_mAP']) == (33.0, 30.1)
    assert (seg['dataset'], seg['mIoU']) == ('ADE20K', 41.25)


def test_summarize_writes_table_csv_and_plot(results):
    out = results['root'] / 'out'
    result = summ.summarize(work_dirs=[results['work_dirs']], benchmark=results['bench'],
                            out_dir=str(out))
    md = open(result['markdown']).read()
    for name in ('SHViT-S4', 'EfficientFormer-L1', 'EfficientFormerV2-S2', 'EdgeViT-XXS'):
        assert name in md
    for value in ('38.8', '39.0', '35.9', '37.9', '35.4', '43.4', '39.5', '42.4', '38.7',
                  '0.280', '0.840', '0.880'):
        assert value in md, value
    with open(result['csv']) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 + len(summ.PAPER_RESULTS)
    assert sum(r['source'] == 'paper' for r in rows) == len(summ.PAPER_RESULTS)
    measured = {r['model']: r for r in rows if r['source'] == 'measured' and
                r['task'] != 'Mask R-CNN'}
    assert float(measured['SHViT-S1']['latency_ms']) == pytest.approx(results['latency'])
    assert 'cpu_latency_seg' in measured['SHViT-S1']['latency_setting']
    assert measured['EfficientFormerV2-S2']['latency_ms'] == ''  # not benchmarked
    import matplotlib.image
    image = matplotlib.image.imread(result['png'])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    with open(result['png'], 'rb') as f:
        assert b'matplotlib' in f.read(4096)  # PNG text chunk "Software: matplotlib ..."


def test_pareto_front():
    points = [(1.0, 30.0), (2.0, 29.0), (3.0, 35.0), (0.5, 20.0), (3.0, 34.0)]
    assert summ.pareto_front(points) == [(0.5, 20.0), (1.0, 30.0), (3.0, 35.0)]


def test_cli(results, capsys):
    spec = importlib.util.spec_from_file_location(
        'tool_summarize', osp.join(ROOT, 'tools/summarize_results.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = results['root'] / 'cli'
    tool.main(['--work-dirs', results['work_dirs'], '--benchmark', results['bench'],
               '--out', str(out)])
    assert 'SHViT-S1' in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ['summary.csv', 'summary.md', 'summary.png']
