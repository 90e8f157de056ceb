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
    assert first != second and first.startswith('torch ')
    assert [m.split(' on ')[1] for m in logged] == [first, second, first, second]
    assert [(r['arch'], r['mode']) for r in rows] == [('shvit_s1', 'eager'), ('shvit_s1', 'deploy')]
    for row in rows:
        assert row[f'{first} ms'] > 0 and row[f'{second} ms'] > 0
        assert row[f'{second} / {first}'] == pytest.approx(row[f'{second} ms'] / row[f'{first} ms'])
    for name in (first, second):  # 3 timed runs per --tiny round, pooled over both rounds
        assert meta['per_stack'][name]['tiny'] is True
    json_path, md_path = write_comparison(rows, meta, str(tmp_path / 'stacks.json'))
    assert json.load(open(json_path))['rows'] == json.loads(json.dumps(rows))
    text = open(md_path).read()
    assert f'{second} / {first}' in text and 'AMD' in text or 'Intel' in text or 'cpu:' in text


def test_an_interpreter_without_torch_is_one_error(tmp_path):
    bad = tmp_path / 'python'
    bad.write_text('#!/bin/sh\necho "ModuleNotFoundError: No module named torch" >&2\nexit 1\n')
    bad.chmod(0o755)
    with pytest.raises(ConfigError, match='cannot import torch: ModuleNotFoundError'):
        compare_stacks([sys.executable, str(bad)], ['shvit_s1'], rounds=1)
    with pytest.raises(ConfigError, match='at least two'):
        compare_stacks([sys.executable], ['shvit_s1'])
