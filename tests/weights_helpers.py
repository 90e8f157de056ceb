"""Shared by the weights tests: an in-process HTTP server, real source key names, inverse maps.

The inverse maps (mmext keys -> a source layout's keys) are written independently of
mmext.checkpoints' forward maps; the tests check their output against the source's REAL key
names and shapes (tests/fixtures/checkpoint_keys.json) before using them.
"""
import http.server
import json
import os.path as osp
import re
import socket
import threading
from collections import Counter

import torch

FIXTURE = osp.join(osp.dirname(osp.abspath(__file__)), 'fixtures', 'checkpoint_keys.json')


def real_keys(source, arch):
    """``{key: shape}`` of a source implementation's state dict (see the fixture's ``_about``)."""
    with open(FIXTURE) as f:
        data = json.load(f)
    return {k: tuple(s) for k, s in data[source][arch]}


def real_count(source, arch):
    with open(FIXTURE) as f:
        return json.load(f)['counts'][source][arch]


class FileServer:
    """Serves ``files`` (``{url path: bytes}``) on 127.0.0.1 and counts requests per path."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.requests = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests[self.path] += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self):
        return f'http://127.0.0.1:{self.httpd.server_address[1]}'

    def url(self, path):
        return self.base + path

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class SilentServer:
    """Accepts TCP connections (the kernel completes them) and never answers."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}/weights/never.pth'
        return self

    def __exit__(self, *exc):
        self.sock.close()


def closed_port_url():
    """A URL on a port where nothing listens (connection refused at once)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return f'http://127.0.0.1:{port}/weights/shvit_s1.pth'


# ----------------------------------------------------------------------------- inverse maps
def shvit_to_official(state):
    """mmext -> the authors' SHViT keys (``patch_embed``, ``blocks{1,2,3}``, ``.c``)."""
    out = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0] == 'stem':
            parts[0] = 'patch_embed'
        else:
            stage, kind, idx = int(parts[1]), parts[2], int(parts[3])
            if kind == 'blocks':
                new = [f'blocks{stage + 1}', str(idx + (3 if stage else 0))]
            elif idx in (0, 1):
                new = [f'blocks{stage + 1}', '0', str(idx)]
            elif idx == 2:
                new = [f'blocks{stage + 1}', '1']
            else:
                new = [f'blocks{stage + 1}', '2', str(idx - 3)]
            parts = new + parts[4:]
        if len(parts) >= 2 and parts[-2] == 'conv' and parts[-1] in ('weight', 'bias') \
                and 'se' not in parts:
            parts[-2] = 'c'
        out['.'.join(parts)] = value
    return out


def efficientformer_to_mmpretrain(state, head_dim):
    """mmext EfficientFormer -> an mmpretrain ImageClassifier checkpoint's ``state_dict``.

    ``network.i`` holds the downsampling ConvModule at ``0`` (stages 1-3), then the blocks, with
    a parameter-free ``Flat`` slot before the first attention block of the last stage.
    """
    attn_blocks = [int(m[1]) for m in
                   (re.match(r'stages\.3\.blocks\.(\d+)\.token_mixer\.qkv\.', k) for k in state)
                   if m]
    first_attn = min(attn_blocks, default=10 ** 6)
    out = {}
    for key, value in state.items():
        m = re.match(r'stem\.([02])\.(conv|bn)\.(.+)$', key)
        if m:
            out[f'backbone.patch_embed.{int(m[1]) // 2}.{m[2]}.{m[3]}'] = value
            continue
        m = re.match(r'stages\.(\d)\.downsample\.(conv|bn)\.(.+)$', key)
        if m:
            out[f'backbone.network.{m[1]}.0.{m[2]}.{m[3]}'] = value
            continue
        m = re.match(r'stages\.(\d)\.blocks\.(\d+)\.(.+)$', key)
        stage, j, rest = int(m[1]), int(m[2]), m[3]
        index = j + (stage > 0) + (stage == 3 and j >= first_attn)
        for old, new in [('mlp.fc1.conv.', 'mlp.fc1.'), ('mlp.fc1.bn.', 'mlp.norm1.'),
                         ('mlp.fc2.conv.', 'mlp.fc2.'), ('mlp.fc2.bn.', 'mlp.norm2.')]:
            rest = rest.replace(old, new)
        rest = re.sub(r'^ls([12])\.gamma$', r'ls\1.weight', rest)
        out[f'backbone.network.{stage}.{index}.{rest}'] = value
        if rest == 'token_mixer.attention_biases':
            n = value.shape[1]
            out[f'backbone.network.{stage}.{index}.token_mixer.attention_bias_idxs'] = \
                torch.zeros(n, n, dtype=torch.long)
    # the classifier: the last output norm (LayerNorm over tokens) and the two heads
    out['backbone.norm3.weight'] = torch.ones(head_dim)
    out['backbone.norm3.bias'] = torch.zeros(head_dim)
    for head in ('head', 'dist_head'):
        out[f'head.{head}.weight'] = torch.zeros(1000, head_dim)
        out[f'head.{head}.bias'] = torch.zeros(1000)
    return out


def timm_v2_file(state, real):
    """A timm EfficientFormerV2 state dict with timm's real key names ``real`` (``{key: shape}``):
    backbone tensors taken from mmext's ``state`` by name, classifier tensors made up."""
    out = {}
    for key, shape in real.items():
        if re.match(r'^(head|head_dist|norm)\.', key):
            out[key] = torch.randn(shape) if key.endswith(('weight', 'bias')) else \
                torch.ones(shape) if key.endswith('running_var') else torch.zeros(shape)
            if key.endswith('num_batches_tracked'):
                out[key] = torch.tensor(0)
        else:
            out[key] = state[key].clone()  # KeyError: mmext lacks one of timm's names
    return out


_V2_REST = [('ls1.gamma', 'layer_scale_1'), ('ls2.gamma', 'layer_scale_2'),
            ('mlp.fc1.conv.', 'mlp.fc1.'), ('mlp.fc1.bn.', 'mlp.norm1.'),
            ('mlp.mid.conv.', 'mlp.mid.'), ('mlp.mid.bn.', 'mlp.mid_norm.'),
            ('mlp.fc2.conv.', 'mlp.fc2.'), ('mlp.fc2.bn.', 'mlp.norm2.'),
            ('q.local.', 'q.local.0.'), ('q.proj.conv.', 'q.proj.0.'), ('q.proj.bn.', 'q.proj.1.')]


def efficientformer_v2_to_official(state):
    """mmext EfficientFormerV2 -> the authors' ``{'model': ...}`` keys, classifier and index
    buffers included (``patch_embed.k``, ``network.N``, Sequential children, ``(C, 1, 1)``
    layer scales)."""
    out = {}
    for key, value in state.items():
        m = re.match(r'stem\.conv([12])\.(conv|bn)\.(.+)$', key)
        if m:
            index = 3 * (int(m[1]) - 1) + (m[2] == 'bn')
            out[f'patch_embed.{index}.{m[3]}'] = value
            continue
        m = re.match(r'stages\.(\d)\.downsample\.conv\.(conv|bn)\.(.+)$', key)
        if m:
            i = int(m[1])
            name = ('proj', 'norm')[m[2] == 'bn'] if i < 3 else m[2]
            out[f'network.{2 * i - 1}.{name}.{m[3]}'] = value
            continue
        m = re.match(r'stages\.(\d)\.(?:downsample\.(attn)|blocks\.(\d+))\.(.+)$', key)
        i, rest = int(m[1]), m[4]
        prefix = f'network.{2 * i - 1}.attn' if m[2] else f'network.{2 * i}.{m[3]}'
        for old, new in _V2_REST:
            if rest.startswith(old) or rest == old:
                rest = new + rest[len(old):]
                break
        else:
            rest = re.sub(r'^proj\.conv\.', 'proj.1.', rest)
            rest = re.sub(r'^proj\.bn\.', 'proj.2.', rest)
            rest = re.sub(r'(^|\.)(q|k|v|v_local|stride_conv)\.conv\.', r'\1\2.0.', rest)
            rest = re.sub(r'(^|\.)(q|k|v|v_local|stride_conv)\.bn\.', r'\1\2.1.', rest)
            rest = re.sub(r'^token_mixer\.proj\.conv\.', 'token_mixer.proj.1.', rest)
            rest = re.sub(r'^token_mixer\.proj\.bn\.', 'token_mixer.proj.2.', rest)
        if rest.startswith('layer_scale'):
            value = value.reshape(-1, 1, 1)
        out[f'{prefix}.{rest}'] = value
        if rest.endswith('attention_biases'):
            n = value.shape[1]
            rows = n // 4 if m[2] else n  # the downsampling attention queries a 2x coarser grid
            out[f'{prefix}.{rest[:-len("biases")]}bias_idxs'] = torch.zeros(rows, n,
                                                                          dtype=torch.long)
    dim = out['network.6.0.mlp.norm2.weight'].shape[0]
    for stat, fill in [('weight', 1.0), ('bias', 0.0), ('running_mean', 0.0), ('running_var', 1.0)]:
        out[f'norm.{stat}'] = torch.full((dim, ), fill)
    out['norm.num_batches_tracked'] = torch.tensor(0)
    for head in ('head', 'dist_head'):
        out[f'{head}.weight'] = torch.zeros(1000, dim)
        out[f'{head}.bias'] = torch.zeros(1000)
    return out
