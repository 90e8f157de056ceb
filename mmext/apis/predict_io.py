"""Inputs, outputs and drawing of :func:`mmext.apis.predict` (the model side is in
:mod:`mmext.apis.predict`).

* :func:`collect_sources`: files, folders (their images and videos, sorted by name, not
  recursive), glob patterns and videos -> a list of :class:`Source`; an unknown or missing
  input, or a folder/pattern without images, is one :class:`~mmext.errors.ConfigError`.
* :func:`plan_outputs`: the files a run will write (``vis/<name>``, ``vis/<stem>.mp4`` for a
  video, ``preds/<stem>.json``), checked before any work: two inputs that would write the same
  file, an output that is an input, or an existing file without ``force`` are refused
  (:class:`~mmext.errors.OutputError`).
* :func:`read_image`, :class:`VideoReader`, :class:`VideoSink`, :func:`write_image`,
  :func:`write_json`: every file is written whole or not at all (a temporary file in the
  target's folder renamed into place, with the permissions of any file the user creates).
* :func:`draw_detections`: boxes, class names and scores (and instance masks) drawn with cv2.
* :func:`progress_bar`: tqdm where installed, else mmengine's ``ProgressBar``, on stderr.
"""
import glob
import json
import os
import os.path as osp
import sys
import tempfile

import numpy as np

from mmext.checkpoints.files import atomic_write, normal_mode, same_file, write_text
from mmext.errors import ConfigError, OutputError

IMAGE_EXTS = ('.bmp', '.jpg', '.jpeg', '.jpe', '.png', '.tif', '.tiff', '.webp', '.pbm',
              '.pgm', '.ppm', '.pnm')
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.m4v', '.mpeg', '.mpg', '.wmv', '.webm',
              '.asf', '.ts', '.gif')
GLOB_CHARS = ('*', '?', '[')


def _cv2():
    # ffmpeg's own messages about an unreadable video ("moov atom not found") would print
    # under the one-line error; quiet unless the user set a level
    os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')
    import cv2
    return cv2


class Source:
    """One input file: ``kind`` is ``'image'`` or ``'video'``."""

    def __init__(self, path, kind):
        self.path = osp.abspath(path)
        self.kind = kind
        self.name = osp.basename(path)
        self.stem = osp.splitext(self.name)[0]
        self.vis_name = self.name if kind == 'image' else self.stem + '.mp4'
        self.pred_name = self.stem + '.json'
        self.frames = 1  # a video's frame count, once probed (0: unknown)

    def __repr__(self):
        return f'Source({self.path!r}, {self.kind!r})'


def kind_of(path):
    ext = osp.splitext(path)[1].lower()
    if ext in IMAGE_EXTS:
        return 'image'
    if ext in VIDEO_EXTS:
        return 'video'
    return None


def _media_in(paths):
    return [Source(p, kind_of(p)) for p in sorted(paths) if osp.isfile(p) and kind_of(p)]


def _formats():
    return f'images {" ".join(IMAGE_EXTS[:6])} ... or videos {" ".join(VIDEO_EXTS[:6])} ...'


def collect_sources(sources):
    """The input files of ``sources`` (a path or a list): see the module docstring."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise ConfigError('no input given: pass an image, a video, a folder or a glob pattern.')
    found, seen = [], set()
    for spec in sources:
        spec = osp.expanduser(os.fspath(spec))
        if '://' in spec:
            raise ConfigError(f'input {spec!r}: URLs and streams are not read; download the '
                              'file first.')
        if osp.isdir(spec):
            items = _media_in(osp.join(spec, n) for n in os.listdir(spec))
            if not items:
                raise ConfigError(f'input folder {spec!r} has no images or videos ({_formats()}; '
                                  'sub-folders are not searched).')
        elif osp.isfile(spec):
            kind = kind_of(spec)
            if kind is None:
                raise ConfigError(f'input {spec!r} is neither an image nor a video by its name '
                                  f'({_formats()}).')
            items = [Source(spec, kind)]
        elif any(c in spec for c in GLOB_CHARS):
            items = _media_in(glob.glob(spec, recursive=True))
            if not items:
                raise ConfigError(f'glob pattern {spec!r} matches no images or videos '
                                  f'({_formats()}).')
        else:
            raise ConfigError(f'input {spec!r} does not exist (an image, a video, a folder or a '
                              'glob pattern).')
        for item in items:
            key = osp.realpath(item.path)
            if key not in seen:  # the same file named twice is predicted once
                seen.add(key)
                found.append(item)
    return found


def plan_outputs(sources, out_dir, save_vis=True, save_pred=True, force=False):
    """``{source: dict(vis=path or None, pred=path or None)}`` once every output may be
    written (module docstring); creates nothing."""
    out_dir = osp.abspath(osp.expanduser(os.fspath(out_dir)))
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise OutputError(f'the output folder {out_dir!r} (--out-dir) is a file; choose another '
                          'path.')
    plan, owner, existing = {}, {}, []
    inputs = [s.path for s in sources]
    for src in sources:
        entry = dict(vis=None, pred=None)
        for key, sub, name, wanted in (('vis', 'vis', src.vis_name, save_vis),
                                       ('pred', 'preds', src.pred_name, save_pred)):
            if not wanted:
                continue
            path = osp.join(out_dir, sub, name)
            if path in owner:
                raise OutputError(
                    f'inputs {owner[path].path!r} and {src.path!r} would both write {path!r} '
                    '(same file name); predict them into separate --out-dir folders.')
            owner[path] = src
            for other in inputs:
                if same_file(other, path):
                    raise OutputError(f'the output {path!r} is the input {other!r}; choose '
                                      'another --out-dir (the input would be lost).')
            if osp.isdir(path):
                raise OutputError(f'the output {path!r} is a folder; remove it or choose another '
                                  '--out-dir.')
            if osp.lexists(path):
                existing.append(path)
            entry[key] = path
        plan[src] = entry
    if existing and not force:
        more = f' and {len(existing) - 1} more' if len(existing) > 1 else ''
        raise OutputError(f'{existing[0]!r}{more} already exist; pass --force (force=True) to '
                          'replace them, or choose another --out-dir.')
    return plan


# ----------------------------------------------------------------------------------- reading
def read_image(path):
    """A BGR uint8 ``HxWx3`` image, decoded as mmdet's ``LoadImageFromFile`` decodes it
    (``cv2.imdecode`` of the file's bytes, colour)."""
    cv2 = _cv2()
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ConfigError(f'cannot read image {path!r}: {exc.strerror or exc}.') from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ConfigError(f'cannot read image {path!r}: not an image file, or damaged.')
    return img


class VideoReader:
    """The frames of a video file (BGR uint8), with its fps, size and frame count (an
    estimate from the container; 0 when unknown)."""

    def __init__(self, path):
        cv2 = _cv2()
        self.path = path
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise ConfigError(f'cannot read video {path!r}: not a video file, damaged, or a '
                              'codec this OpenCV build lacks.')
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 25.0
        self.count = max(int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)

    def __iter__(self):
        index = 0
        while True:
            ok, frame = self.cap.read()
            if not ok:
                break
            yield index, frame
            index += 1
        if index == 0:
            raise ConfigError(f'cannot read video {self.path!r}: no frame could be decoded.')

    def close(self):
        self.cap.release()


def probe_videos(sources):
    """Open each video once (an unreadable one is a ConfigError now, not after the model is
    loaded) and note its frame count for the progress bar."""
    for src in sources:
        if src.kind == 'video':
            reader = VideoReader(src.path)
            src.frames = reader.count
            reader.close()


# ----------------------------------------------------------------------------------- writing
def prepare_folders(plan):
    """Create the folders of the planned outputs (checked to be writable)."""
    from mmext.checkpoints.files import writable_folder
    folders = sorted({osp.dirname(p) for entry in plan.values() for p in entry.values() if p})
    for folder in folders:
        writable_folder(folder, 'output folder')


def write_image(path, img):
    """``img`` (BGR) encoded by its file extension, written atomically."""
    cv2 = _cv2()
    ext = osp.splitext(path)[1] or '.jpg'
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise OutputError(f'cannot encode the image {path!r} as {ext}.')
    return atomic_write(path, lambda f: f.write(buf.tobytes()), what='annotated image')


def write_json(path, obj):
    return write_text(path, json.dumps(obj), what='prediction file')


class VideoSink:
    """An ``.mp4`` (``mp4v``) written frame by frame into a temporary file next to ``path``,
    renamed into place by :meth:`close` (``ok=False`` removes it instead); the size is the
    first frame's."""

    def __init__(self, path, fps):
        self.path, self.fps = path, fps
        self.writer = self.tmp = None
        self.frames = 0

    def write(self, frame):
        cv2 = _cv2()
        if self.writer is None:
            fd, self.tmp = tempfile.mkstemp(prefix=f'.{osp.basename(self.path)}.',
                                            suffix='.part.mp4', dir=osp.dirname(self.path))
            os.close(fd)
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*'mp4v'), self.fps,
                                          (w, h))
            if not self.writer.isOpened():
                self.close(ok=False)
                raise OutputError(f'cannot write the video {self.path!r}: OpenCV has no mp4v '
                                  'encoder here; pass --no-save-vis.')
        self.writer.write(frame)
        self.frames += 1

    def close(self, ok=True):
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp is None:
            return None
        tmp, self.tmp = self.tmp, None
        if not ok:
            if osp.lexists(tmp):
                os.remove(tmp)
            return None
        try:
            os.chmod(tmp, normal_mode())
            os.replace(tmp, self.path)
        except OSError as exc:
            if osp.lexists(tmp):
                os.remove(tmp)
            raise OutputError(f'cannot write the video {self.path!r} '
                              f'({exc.strerror or exc}).') from None
        return self.path


# ----------------------------------------------------------------------------------- drawing
def class_colors(num, palette=None):
    """``num`` BGR colours: the dataset's palette (RGB tuples) where it has one, else evenly
    spread hues."""
    if isinstance(palette, (list, tuple)) and len(palette) >= num and num > 0 and all(
            isinstance(c, (list, tuple)) and len(c) == 3 for c in palette[:num]):
        return [tuple(int(v) for v in c[::-1]) for c in palette[:num]]
    cv2 = _cv2()
    hues = np.array([[[(i * 0.618033988749895 % 1.0) * 179, 200, 230]]
                     for i in range(max(num, 1))], dtype=np.uint8)
    bgr = cv2.cvtColor(hues.reshape(-1, 1, 3), cv2.COLOR_HSV2BGR).reshape(-1, 3)
    return [tuple(int(v) for v in c) for c in bgr]


def class_name(classes, label):
    return classes[label] if 0 <= label < len(classes) else f'class{label}'


def draw_detections(img, pred, classes, colors):
    """A copy of ``img`` (BGR) with ``pred``'s boxes, ``name score`` labels and masks."""
    cv2 = _cv2()
    out = img.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 320))
    font = max(0.35, min(h, w) / 900)
    masks = pred.get('masks')
    labels, scores, bboxes = pred['labels'], pred['scores'], pred['bboxes']

    def color(label):
        return colors[label % len(colors)] if colors else (0, 255, 0)

    if masks is not None and len(masks):
        overlay = out.copy()
        for mask, label in zip(masks, labels):
            overlay[np.asarray(mask, dtype=bool)] = color(int(label))
        out = cv2.addWeighted(overlay, 0.4, out, 0.6, 0)
    for box, label, score in zip(bboxes, labels, scores):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
        c = color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thick, cv2.LINE_AA)
        text = f'{class_name(classes, int(label))} {float(score):.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), c, -1)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


# ----------------------------------------------------------------------------------- progress
class _MmengineBar:
    def __init__(self, total):
        from mmengine.utils import ProgressBar
        self.bar = ProgressBar(total, file=sys.stderr)

    def update(self, n=1):
        self.bar.update(n)

    def close(self):
        sys.stderr.write('\n')
        sys.stderr.flush()


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(total, enabled=True):
    """A bar over ``total`` images/frames on stderr (tqdm, else mmengine's), or nothing."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _MmengineBar(total)
    return tqdm(total=total or None, unit='img', file=sys.stderr, dynamic_ncols=True,
                leave=True)
