"""Results summary: real mmengine test runs (toy model, real Runner) + a benchmark JSON ->
markdown, CSV and a PNG plot with the papers' reference rows."""
import csv
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
from mmext.models.families import arch_entries
from tests.helpers import load_tool



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
    # every paper result and latency of the family manifest, as the table prints them
    for family, arch, spec in arch_entries():
        for r in spec.results:
            for value in (r.bbox_mAP, r.segm_mAP, r.mIoU):
                if value is not None:
                    assert f'| {family.pretty(arch)} | {r.task} |' in md and f'{value:.1f}' in md
        if spec.a100_latency_ms is not None:
            assert f'{spec.a100_latency_ms:.3f}' in md
    with open(result['csv']) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 + len(summ.PAPER_RESULTS) + len(summ.MMDET_RESULTS)
    assert sum(r['source'] == 'paper' for r in rows) == len(summ.PAPER_RESULTS)
    assert sum(r['source'] == 'mmdet' for r in rows) == len(summ.MMDET_RESULTS)
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


def test_metric_units():
    """mmdet's fractions become percent; mmseg's mIoU is percent already, even when below 1."""
    assert summ.normalise_metrics({'coco/bbox_mAP': 0.388, 'coco/segm_mAP': 0.0}) == dict(
        bbox_mAP=38.8, segm_mAP=0.0)
    assert summ.normalise_metrics({'mIoU': 0.62, 'aAcc': 40.0}) == dict(mIoU=0.62)
    assert summ.normalise_metrics({'mIoU': 41.25}) == dict(mIoU=41.25)


def test_pareto_front():
    # (2.0, 30.0) ties the faster (1.0, 30.0): beaten, not on the front; so is (3.0, 34.0)
    points = [(1.0, 30.0), (2.0, 29.0), (3.0, 35.0), (0.5, 20.0), (3.0, 34.0), (2.0, 30.0),
              (4.0, 35.0), (5.0, 36.0, 'last')]
    assert summ.pareto_front(points) == [(0.5, 20.0), (1.0, 30.0), (3.0, 35.0),
                                         (5.0, 36.0, 'last')]
    assert summ.pareto_front([]) == []


def bench_row(arch, median_ms, mode='deploy', protocol='cpu_latency_seg', source='mmext',
              status='ok'):
    return dict(arch=arch, source=source, mode=mode, protocol=protocol, device='cpu',
                device_name='test cpu', batch=1, input_size='512x512', median_ms=median_ms,
                status=status)


def test_latency_joins_each_run_to_its_own_backbone():
    runs = [dict(source='measured', model=summ.pretty_backbone(b), backbone=b, task='RetinaNet',
                 bbox_mAP=30.0 + i) for i, b in enumerate(
                     ['shvit_s1', 'efficientformerv2_s2', 'edgevit_xxs', 'shvit_s4'])]
    bench = [bench_row('efficientformerv2_s2', 25.0, mode='eager'),
             bench_row('efficientformerv2_s2', 20.0),
             bench_row('efficientformerv2_s2', 5.0, source='timm', mode='eager'),
             bench_row('shvit_s4', 7.0, source='timm', mode='eager'),  # timm's only
             bench_row('shvit_s1', 99.0, protocol='cpu_throughput'),
             bench_row('shvit_s1', 10.0),
             bench_row('edgevit_xxs', None, status='failed: RuntimeError: x'),
             bench_row('edgevit_xxs', 30.0, mode='eager')]
    rows = summ.build_rows(runs, bench, include_paper=False)
    got = {r['backbone']: (r.get('latency_ms'), r.get('latency_setting')) for r in rows}
    assert got['shvit_s1'] == (10.0, 'test cpu, cpu_latency_seg, b1 512x512, deploy')
    assert got['efficientformerv2_s2'][0] == 20.0  # mmext's deploy row, not timm's or eager
    assert got['edgevit_xxs'] == (30.0, 'test cpu, cpu_latency_seg, b1 512x512, eager')
    assert got['shvit_s4'] == (None, None)  # not benchmarked
    chosen = summ.build_rows(runs, bench, latency_protocol='cpu_throughput',
                             include_paper=False)
    assert [r.get('latency_ms') for r in chosen] == [99.0, None, None, None]


def test_family_names_come_from_the_registry():
    from mmext.analysis.naming import family_names, identify_from_path
    from mmext.benchmark.protocols import backbone_families
    assert family_names() == {name.lower(): name for name in backbone_families()}
    for family in backbone_families():
        key = f'{family.lower()}_x9'
        assert summ.pretty_backbone(key) == f'{family}-X9'
        info = identify_from_path(osp.join('work_dirs', 'retinanet', f'{key}_fpn_1x_coco'))
        assert info == dict(backbone=key, task='RetinaNet', dataset='COCO')
    assert summ.pretty_backbone('efficientformerv2_s2') == 'EfficientFormerV2-S2'


def test_markdown_and_csv_keep_every_row_in_order(tmp_path):
    rows = summ.build_rows([dict(source='measured', model='A|B', backbone='shvit_s1',
                                 task='RetinaNet', bbox_mAP=31.25)], include_paper=True)
    table = [line for line in summ.to_markdown(rows).splitlines() if line.startswith('| ')]
    assert len(table) == 1 + len(rows)
    for row, line in zip(rows, table[1:]):
        cells = [c.strip() for c in line[2:-2].split(' | ')]
        assert cells[:3] == [row['source'], row['model'].replace('|', '\\|'), row['task']]
    assert '31.2' in table[1]
    with open(summ.write_csv(rows, str(tmp_path / 's.csv'))) as f:
        written = list(csv.DictReader(f))
    assert [r['model'] for r in written] == [r['model'] for r in rows]


def test_cli(results, capsys):
    tool = load_tool('summarize_results')
    out = results['root'] / 'cli'
    tool.main(['--work-dirs', results['work_dirs'], '--benchmark', results['bench'],
               '--out', str(out)])
    assert 'SHViT-S1' in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ['summary.csv', 'summary.md', 'summary.png']


def test_config_name_of_each_run_in_a_shared_work_dir(tmp_path):
    """Two configs tested into one work dir: each run is named by the config file mmengine
    dumped with its own text, not by the other one or by the work dir."""
    from mmengine.config import Config
    work_dir = tmp_path / 'work_dirs' / 'shared'
    for i, name in enumerate(['a_rtmdet_cfg', 'b_rtmdet_cfg']):
        cfg = det_cfg()
        cfg['model']['type'] = 'RTMDet'
        cfg['model']['backbone']['arch'] = f's{i + 1}'
        path = tmp_path / f'{name}.py'
        path.write_text(''.join(f'{k} = {v!r}\n' for k, v in cfg.items()))
        real_test_run(work_dir, Config.fromfile(str(path)), dict(bbox_mAP=0.1 * (i + 1)),
                      'coco', f'cfg_{name}')
        time.sleep(1.1)  # mmengine names run folders by the second
    assert sorted(f for f in os.listdir(work_dir) if f.endswith('.py')) == [
        'a_rtmdet_cfg.py', 'b_rtmdet_cfg.py']
    runs = {r['backbone']: r for r in summ.collect_runs(str(work_dir))}
    assert runs['shvit_s1']['config'] == 'a_rtmdet_cfg' and runs['shvit_s1']['task'] == 'RTMDet'
    assert runs['shvit_s2']['config'] == 'b_rtmdet_cfg' and runs['shvit_s2']['bbox_mAP'] == 20.0
