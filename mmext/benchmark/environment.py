"""What benchmark figures depend on: the device names and library versions of this machine."""
import datetime
import os
import platform

import torch

from mmext.deploy.malloc import malloc_setting
from mmext.deploy.runners import module_version


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device):
    if device == 'cuda':
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return f'{cpu_name()} ({os.cpu_count()} logical cores)'


def environment():
    """What the numbers depend on: devices, library versions."""
    env = dict(torch=torch.__version__, python=platform.python_version(),
               cpu=device_name('cpu'), cuda=torch.version.cuda,
               gpu=device_name('cuda') if torch.cuda.is_available() else None,
               cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
               timm=module_version('timm'), torchvision=module_version('torchvision'),
               onnxruntime=module_version('onnxruntime'), malloc=malloc_setting(),
               date=datetime.datetime.now().isoformat(timespec='seconds'))
    return env

