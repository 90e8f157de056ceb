"""tools/benchmark_stacks.py: the backbone benchmark on several interpreters, interleaved."""
import json
import sys

import pytest

from mmext.benchmark.stacks import compare_stacks, write_comparison
from mmext.errors import ConfigError


@pytest.mark.slow  # two benchmark subprocesses per round
def test_rounds_alternate_between_stacks_and_rows_pool_them(tmp_path):
    logged = []
    pythons = [sys.executable, sys.executable]  # the same torch twice: told apart by path
    rows, meta = compare_stacks(pythons, ['shvit_s1'], modes=('eager', 'deploy'), rounds=2,
                                extra_args=['--tiny', '--no-peaks'],
                                log=lambda msg, flush=True: logged.append(msg))
    first, second = meta['stacks']
    assert first != second and first.startswith('torch-')
    assert [m.split(' on ')[1].replace(' ', '-') for m in logged] == [first, second, first, second]
    assert [(r['arch'], r['mode'], r['stack']) for r in rows] == [
        ('shvit_s1', 'eager', first), ('shvit_s1', 'eager', second),
        ('shvit_s1', 'deploy', first), ('shvit_s1', 'deploy', second)]
    for a, b in zip(rows[::2], rows[1::2]):
        assert a['status'] == b['status'] == 'ok' and a['median_ms'] > 0 and b['median_ms'] > 0
        assert a['runs'] == b['runs'] == 6  # 3 timed runs per --tiny round, pooled over 2 rounds
        assert a['ratio'] == 1 and b['ratio'] == pytest.approx(b['median_ms'] / a['median_ms'])
    assert meta['torch'] and meta['cpu'] and meta['date']
    json_path, md_path = write_comparison(rows, meta, str(tmp_path / 'stacks.json'))
    assert json.load(open(json_path))['rows'] == json.loads(json.dumps(rows))
    text = open(md_path).read()
    assert f'| {second} / {first} |' in text and f'| shvit_s1 | deploy |' in text


def test_an_interpreter_without_torch_is_one_error(tmp_path):
    bad = tmp_path / 'python'
    bad.write_text('#!/bin/sh\necho "ModuleNotFoundError: No module named torch" >&2\nexit 1\n')
    bad.chmod(0o755)
    with pytest.raises(ConfigError, match='cannot import torch: ModuleNotFoundError'):
        compare_stacks([sys.executable, str(bad)], ['shvit_s1'], rounds=1)
    with pytest.raises(ConfigError, match='at least two'):
        compare_stacks([sys.executable], ['shvit_s1'])
