"""Backbones to ONNX: the deploy-mode model (BatchNorms folded) with dynamic batch, height and width.

:func:`export_onnx` writes the graph, :func:`verify_onnx` runs it in ONNX Runtime at several input
sizes and compares every output level with PyTorch, and :func:`export_backbone` does both for a
backbone named by ``type`` and ``arch`` (``tools/export_onnx.py``).

Exporter: torch 2.9+ defaults to the ``torch.export``-based ("dynamo") exporter, which needs the
``onnxscript`` package. The TorchScript-based exporter (``dynamo=False``) is still in torch 2.13 and
needs nothing else, so ``exporter='auto'`` uses it while torch has it and falls back to the dynamo
exporter otherwise. The TorchScript exporter traces the model at one input size: a forward pass that
turns a traced shape into a Python number (``int(h)``, a shape compared in an ``if``, a cache keyed
on sizes) bakes that size into the graph. Such graphs run at the traced size only, which is why
:func:`verify_onnx` checks a second size, and why the tracer's warnings are returned (they name the
file and line of every such conversion).
"""
import copy
import os
import os.path as osp
import tempfile
import warnings

import numpy as np
import torch

from mmext.compat.onnx_export import has_dynamo_exporter, has_torchscript_exporter, onnx_export
from mmext.checkpoints.files import normal_mode
from mmext.deploy.build import build_backbone
from mmext.errors import ConfigError, MmextError
from mmext.utils import error_line, max_rel_err, output_list

DEFAULT_OPSET = 17
INPUT_NAME = 'input'


# ------------------------------------------------------------------------------------ helpers
def output_names_of(model):
    """``level{i}`` for each returned stage ``i`` (``model.out_indices``), else ``level0..``."""
    indices = getattr(model, 'out_indices', None)
    if indices is None:
        return None
    return [f'level{i}' for i in indices]


def _dynamic_axes(output_names, dynamic_batch=True):
    axes = {INPUT_NAME: {2: 'height', 3: 'width'}}
    if dynamic_batch:
        axes[INPUT_NAME][0] = 'batch'
    for name in output_names:
        axes[name] = {2: f'{name}_height', 3: f'{name}_width'}
        if dynamic_batch:
            axes[name][0] = 'batch'
    return axes


def _has_onnxscript():
    try:
        import onnxscript  # noqa: F401
        return True
    except ImportError:
        return False


def choose_exporter(exporter='auto'):
    """``'torchscript'`` or ``'dynamo'``, resolving ``'auto'`` as the module docstring says."""
    if exporter not in ('auto', 'torchscript', 'dynamo'):
        raise ConfigError(f"exporter must be 'auto', 'torchscript' or 'dynamo', not {exporter!r}")
    if exporter == 'auto':
        exporter = 'torchscript' if has_torchscript_exporter() else 'dynamo'
    if exporter == 'dynamo' and not has_dynamo_exporter():
        raise MmextError(f'the torch.export-based ONNX exporter needs torch >= 2.5 (this is '
                         f'{torch.__version__}); use exporter="torchscript".')
    if exporter == 'dynamo' and not _has_onnxscript():
        raise MmextError('the torch.export-based ONNX exporter needs the onnxscript package: '
                         '`pip install onnxscript` (or use exporter="torchscript" where this torch '
                         'still has it).')
    return exporter


def _tracer_warning_lines(records):
    """Distinct ``file:line: message`` of the TracerWarnings raised outside torch while exporting."""
    tracer_warning = getattr(torch.jit, 'TracerWarning', None)
    torch_dir = osp.dirname(osp.abspath(torch.__file__)) + os.sep
    lines = []
    for rec in records:
        if tracer_warning is not None and not issubclass(rec.category, tracer_warning):
            continue
        if osp.abspath(rec.filename).startswith(torch_dir):
            continue  # torch's own argument checks (e.g. group_norm's batch-size test)
        message = str(rec.message).strip().splitlines()[0]
        line = f'{rec.filename}:{rec.lineno}: {message}'
        if line not in lines:
            lines.append(line)
    return lines


# ------------------------------------------------------------------------------------ export
@torch.no_grad()
def export_onnx(model, path, input_shape=(1, 3, 224, 224), opset=DEFAULT_OPSET, dynamic=True,
                exporter='auto', output_names=None):
    """Write ``model`` (used as it is: call ``switch_to_deploy()`` first) to ONNX at ``path``.

    Args:
        model (nn.Module): returns a tensor or a tuple of tensors (one per level).
        path (str): the ``.onnx`` file to write (its folder is created); written in place,
            so use :func:`export_backbone` (temp file, verified, then renamed) for user paths.
        input_shape (tuple): ``(N, 3, H, W)`` of the example input the graph is traced with.
        opset (int): ONNX opset, at least 17.
        dynamic (bool): batch, height and width of the input (and of every output) are dynamic
            axes; False fixes the graph to ``input_shape``.
        exporter (str): ``'auto'``, ``'torchscript'`` or ``'dynamo'``.
        output_names (list[str]): defaults to ``level{i}`` per entry of ``model.out_indices``.

    Returns:
        dict: ``path``, ``input_name``, ``output_names``, ``exporter``, ``opset``, ``dynamic``
        and ``tracer_warnings`` (``file:line: message`` of each shape the tracer had to freeze).
    """
    if not str(path).lower().endswith('.onnx'):
        raise ConfigError(f'{path!r} does not end in .onnx; an ONNX graph is only written to a '
                          '<name>.onnx file.')
    if opset < 17:
        raise ConfigError(f'opset {opset} is too old for these backbones; use 17 or newer.')
    exporter = choose_exporter(exporter)
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    example = torch.randn(*input_shape, device=device)
    n_out = len(output_list(model(example)))
    if output_names is None:
        output_names = output_names_of(model)
    if output_names is None or len(output_names) != n_out:
        output_names = [f'level{i}' for i in range(n_out)]
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    kwargs = dict(input_names=[INPUT_NAME], output_names=list(output_names),
                  opset_version=opset)
    if dynamic:
        kwargs['dynamic_axes'] = _dynamic_axes(output_names)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter('always')
        try:
            onnx_export(model, (example, ), path, exporter=exporter, **kwargs)
        finally:
            model.train(was_training)
    return dict(path=path, input_name=INPUT_NAME, output_names=list(output_names),
                exporter=exporter, opset=opset, dynamic=dynamic,
                tracer_warnings=_tracer_warning_lines(records))


# ------------------------------------------------------------------------------------ checks
def ort_session(path, threads=1, providers=None):
    """An ONNX Runtime session with ``threads`` intra-op threads (all graph optimisations)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MmextError('onnxruntime is not installed: `pip install onnxruntime` (listed in '
                         'requirements/runtime.txt).') from None
    return ort.InferenceSession(path, ort_session_options(threads),
                                providers=providers or ['CPUExecutionProvider'])


def ort_session_options(threads=1):
    """The ``SessionOptions`` of :func:`ort_session` (onnxruntime must be importable)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


@torch.no_grad()
def verify_onnx(model, path, sizes=((224, 224), (320, 480)), batch=1, seed=0, threads=None):
    """Run the ONNX graph at each ``(H, W)`` of ``sizes`` and compare with ``model`` (on CPU).

    Returns:
        dict: ``'HxW' -> {'max_rel_err', 'max_abs_err', 'shapes', 'error'}`` where the errors are
        the largest over the output levels (``max|torch - onnx| / max|torch|``) and ``error`` is
        ``None`` or why the graph did not run or gave other shapes (then the errors are ``inf``).
    """
    session = ort_session(path, threads=threads)
    input_name = session.get_inputs()[0].name
    model = copy.deepcopy(model).cpu().eval()
    gen = torch.Generator().manual_seed(seed)
    results = {}
    for h, w in sizes:
        x = torch.randn(batch, 3, int(h), int(w), generator=gen)
        refs = [t.numpy() for t in output_list(model(x))]
        entry = dict(max_rel_err=float('inf'), max_abs_err=float('inf'),
                     shapes=[list(r.shape) for r in refs], error=None)
        try:
            outs = session.run(None, {input_name: x.numpy()})
        except Exception as exc:  # onnxruntime raises its own types
            entry['error'] = f'onnxruntime failed: {error_line(exc, 400)}'
            results[f'{h}x{w}'] = entry
            continue
        bad = [(list(r.shape), list(o.shape)) for r, o in zip(refs, outs) if r.shape != o.shape]
        if len(outs) != len(refs) or bad:
            entry['error'] = (f'{len(outs)} outputs of shapes {[list(o.shape) for o in outs]} '
                              f'where PyTorch gives {entry["shapes"]}')
        else:
            entry['max_rel_err'] = max_rel_err(refs, outs)
            entry['max_abs_err'] = max(float(np.abs(r - o).max()) for r, o in zip(refs, outs))
        results[f'{h}x{w}'] = entry
    return results


# ------------------------------------------------------------------------------------ output file
def check_output_path(out, force=False, inputs=()):
    """The absolute path of ``out`` once it is safe to write; else :class:`ConfigError`.

    Refused: a name not ending in ``.onnx`` (the tool never writes over a checkpoint or any other
    kind of file), one of the ``inputs`` (e.g. the checkpoint being read), a folder, an existing
    file unless ``force``, and a folder that cannot be created or written.
    """
    out = str(out)
    path = osp.abspath(out)
    for other in inputs:
        if other and osp.exists(other) and osp.exists(path) and osp.samefile(other, path):
            raise ConfigError(f'the output {out!r} is the input {other!r}; write the ONNX graph '
                              'to another file.')
    if not out.lower().endswith('.onnx'):
        raise ConfigError(f'the output {out!r} does not end in .onnx; give an output file '
                          'named <name>.onnx (nothing is written over another kind of file).')
    if osp.isdir(path):
        raise ConfigError(f'the output {out!r} is a folder; give a file name ending in .onnx.')
    if osp.lexists(path) and not force:
        raise ConfigError(f'{out!r} already exists; pass --force (force=True) to replace it.')
    folder = osp.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f'cannot create the output folder {folder!r}: part of that path is a '
                          'file, not a folder; choose another output path.') from None
    except OSError as exc:
        raise ConfigError(f'cannot create the output folder {folder!r} '
                          f'({exc.strerror or exc}); choose another output path.') from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f'cannot write into {folder!r} (permission denied); choose another '
                          'output path.')
    return path


def _temp_path(path):
    """An empty temporary ``.onnx`` file next to ``path`` (same file system: renamed atomically)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp.onnx',
                                   dir=osp.dirname(path))
    except OSError as exc:
        raise ConfigError(f'cannot write into {osp.dirname(path)!r} ({exc.strerror or exc}); '
                          'choose another output path.') from None
    os.close(fd)
    return tmp


def _problems(errors, tol):
    return [f'{size}: {e["error"] or "relative error %.3g > %g" % (e["max_rel_err"], tol)}'
            for size, e in errors.items() if e['error'] or not e['max_rel_err'] < tol]


# ------------------------------------------------------------------------------------ backbones
def export_backbone(type, arch, out, checkpoint=None, sizes=((224, 224), (320, 480)),
                    opset=DEFAULT_OPSET, exporter='auto', tol=1e-4, dynamic=True, check=True,
                    model=None, force=False):
    """Export the deploy-mode backbone to ``out`` and verify it with ONNX Runtime.

    The graph is traced at the first of ``sizes`` and checked at all of them. It is written to a
    temporary file in ``out``'s folder and renamed to ``out`` only once the check passed: a graph
    that fails (or an export that breaks) leaves no file behind and an existing ``out`` as it
    was. ``out`` must end in ``.onnx`` and must not exist unless ``force``
    (:func:`check_output_path`).

    Args:
        type, arch (str): the backbone, e.g. ``'SHViT', 's4'``.
        out (str): the ``.onnx`` file.
        checkpoint (str, optional): ImageNet weights; random weights otherwise (fine for
            checking the graph, not for deployment).
        sizes: ``(H, W)`` input sizes to verify (at least two different ones prove the graph
            has dynamic height and width).
        tol (float): largest relative error accepted.
        check (bool): raise :class:`MmextError` when a size fails or exceeds ``tol`` (False
            writes ``out`` whatever the errors are).
        model (nn.Module, optional): use this (already fused) model instead of building one.
        force (bool): replace an existing ``out``.

    Returns:
        dict: what :func:`export_onnx` returns plus ``errors`` (:func:`verify_onnx`) and
        ``max_rel_err`` (over all sizes).
    """
    if not sizes:
        raise ConfigError('give at least one input size to export and verify at.')
    path = check_output_path(out, force, inputs=(checkpoint, ))
    if model is None:
        model = build_backbone(type, arch, checkpoint=checkpoint)
    h, w = sizes[0]
    tmp = _temp_path(path)
    try:
        try:
            info = export_onnx(model, tmp, (1, 3, int(h), int(w)), opset=opset,
                               dynamic=dynamic, exporter=exporter)
        except MmextError:
            raise
        except Exception as exc:  # the exporter's own errors, deep inside torch.onnx
            raise MmextError(f'exporting {type}-{arch} to ONNX failed ({error_line(exc)}); '
                             f'nothing was written to {out}.') from exc
        info['errors'] = verify_onnx(model, tmp, sizes)
        info['max_rel_err'] = max(e['max_rel_err'] for e in info['errors'].values())
        problems = _problems(info['errors'], tol)
        if check and problems:
            hint = ''
            if info['tracer_warnings']:
                hint = (' The tracer froze these shapes (a Python number taken from a tensor '
                        'shape; the graph then only works at the traced size): ' +
                        '; '.join(info['tracer_warnings']))
            raise MmextError(f'the ONNX graph of {type}-{arch} does not match PyTorch ('
                             + '; '.join(problems) + f'); nothing was written to {out}.' + hint)
        os.chmod(tmp, normal_mode())  # mkstemp made it 0600; a new file gets 0644 (umask 022)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    info.update(path=out, model=f'{type}-{arch}')
    return info
