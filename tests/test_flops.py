"""Params and MACs of backbones and of configs' models."""
import os.path as osp

import pytest
import torch

from mmext.analysis.flops import backbone_complexity, get_flops
from tests.helpers import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_shvit_s1_matches_paper():
    result = backbone_complexity('SHViT', 's1', 224)
    assert result['input_shape'] == [1, 3, 224, 224]
    # the paper's 0.241 G is the classifier: backbone + the 320 -> 1000 head
    assert round((result['macs'] + 320 * 1000) / 1e9, 3) == 0.241
    assert result['gmacs'] == round(result['macs'] / 1e9, 3)
    assert 5.9 < result['mparams'] < 6.1


@pytest.mark.slow
def test_config_flops_counts_the_part_asked_for():
    pytest.importorskip('mmdet')
    config = osp.join(ROOT, 'configs/retinanet/shvit_s1_fpn_1x_coco.py')
    parts = {part: get_flops(config=config, input_size=(128, 192), part=part)
             for part in ('backbone', 'backbone+neck', 'model')}
    neck = parts['backbone+neck']
    backbone = backbone_complexity('SHViT', 's1', (128, 192))
    assert neck['codebase'] == 'mmdet' and neck['input_shape'] == [1, 3, 128, 192]
    assert neck['model'] == 'RetinaNet(SHViT-s1)' and neck['part'] == 'backbone+neck'
    # the config's backbone is the same SHViT-S1: same MACs and parameters
    assert parts['backbone']['macs'] == backbone['macs'] > 0
    assert parts['backbone']['params'] == backbone['params']
    assert backbone['macs'] < neck['macs'] < parts['model']['macs']
    assert backbone['params'] == neck['backbone_params'] < neck['params'] < neck['model_params']
    assert parts['model']['params'] == neck['model_params']


def test_cli_backbone(capsys):
    tool = load_tool('get_flops')
    tool.main(['--backbone', 'SHViT', '--arch', 's1', '--shape', '224'])
    out = capsys.readouterr().out
    assert 'GMACs:  0.241' in out and 'SHViT-s1' in out


def test_count_macs_restores_the_training_mode():
    from mmext.analysis import count_macs
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).train()
    assert count_macs(model, (1, 3, 10, 10)) == 8 * 3 * 9 * 8 * 8
    assert model.training
    with pytest.raises(RuntimeError):
        count_macs(model, (1, 4, 10, 10))  # wrong number of channels
    assert model.training and model[1].training
