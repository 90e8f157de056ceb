"""mmengine hooks that mmext's runs register."""
from mmengine.hooks import Hook

from mmext.utils import unwrap_model


class MetricsRecorder(Hook):
    """Keeps the metrics of the last validation (train) or test run."""

    priority = 'VERY_LOW'

    def __init__(self):
        self.metrics = {}

    def after_val_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics = dict(metrics)

    def after_test_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics = dict(metrics)


class FuseBackboneHook(Hook):
    """Calls ``backbone.switch_to_deploy()`` once the checkpoint is loaded, before testing."""

    priority = 'VERY_LOW'  # after EMA and other hooks that swap weights in before_test

    def __init__(self):
        self.fused = False

    def before_test(self, runner):
        model = unwrap_model(runner.model)
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'switch_to_deploy'):
            backbone.switch_to_deploy()
            self.fused = True
            runner.logger.info('mmext: fused the backbone (switch_to_deploy) for testing.')
        else:
            runner.logger.warning('mmext: --fuse asked, but the model\'s backbone has no '
                                  'switch_to_deploy(); testing it unfused.')

