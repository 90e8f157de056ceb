"""The models a benchmark times: mmext's backbones, timm's counterparts, a ResNet-50 reference."""
import torch


def build_mmext(arch, seed=0):
    """The mmext backbone of ``arch`` (random weights from ``seed``, all stages returned, eval
    mode, unfused: the runners fuse copies of it)."""
    from mmext.deploy.build import build_backbone
    torch.manual_seed(seed)
    return build_backbone(arch.type, arch.arch, deploy=False)


def _timm():
    try:
        import timm
        return timm
    except Exception:
        return None


def build_timm(name, features, seed=0):
    """timm's model: the classifier, or ``features_only=True`` for dense-prediction sizes."""
    timm = _timm()
    torch.manual_seed(seed)
    if features:
        return timm.create_model(name, pretrained=False, features_only=True).eval()
    return timm.create_model(name, pretrained=False).eval()


class _TorchvisionResNetFeatures(torch.nn.Module):
    """torchvision's ResNet without pooling and classifier: the four stage outputs."""

    def __init__(self, resnet):
        super().__init__()
        self.resnet = resnet

    def forward(self, x):
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        outs = []
        for layer in (r.layer1, r.layer2, r.layer3, r.layer4):
            x = layer(x)
            outs.append(x)
        return tuple(outs)


def build_reference(features, seed=0):
    """ResNet-50 from timm or else torchvision: ``(model, source)``, or ``(None, None)``."""
    torch.manual_seed(seed)
    if _timm() is not None:
        return build_timm('resnet50', features, seed), 'timm'
    try:
        import torchvision
    except Exception:
        return None, None
    model = torchvision.models.resnet50(weights=None).eval()
    return (_TorchvisionResNetFeatures(model) if features else model), 'torchvision'

