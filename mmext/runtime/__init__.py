"""What the command-line tools do, as functions (``tools/*.py`` only parse arguments).

``train`` and ``test`` run mmdet or mmseg configs through mmengine's Runner; ``run_demo`` is
``make demo``. Import cost stays low: the heavy libraries load when a function runs.
"""


def train(*args, **kwargs):
    from mmext.runtime.train import train as _train
    return _train(*args, **kwargs)


def test(*args, **kwargs):
    from mmext.runtime.test import test as _test
    return _test(*args, **kwargs)


def run_demo(*args, **kwargs):
    from mmext.runtime.demo import run_demo as _run_demo
    return _run_demo(*args, **kwargs)


train.__doc__ = 'See :func:`mmext.runtime.train.train`.'
test.__doc__ = 'See :func:`mmext.runtime.test.test`.'
run_demo.__doc__ = 'See :func:`mmext.runtime.demo.run_demo`.'

__all__ = ['train', 'test', 'run_demo']
