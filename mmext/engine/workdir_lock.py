"""One live training run per work dir.

mmengine names a run's log folder by the second it started, so two runs on one ``--work-dir``
can share a folder and log file and overwrite each other's ``epoch_*.pth`` silently. A run
holds ``<work_dir>/.mmext_train.lock`` (JSON: pid, host, start time, command) while it trains;
a second run on the same work dir is refused. A lock whose process is gone (a killed run on
this host) is taken over, and :attr:`WorkDirLock.note` says so for the run's log. The lock is
released when the run ends, also on an error. Training and ``tools/demo.py`` both hold it. A
work dir that cannot be created or written is one :class:`~mmext.errors.OutputError`.
"""
import json
import os
import os.path as osp
import socket
import sys
import time

from mmext.errors import OutputError, WorkDirBusyError, os_error_hint

LOCK_NAME = '.mmext_train.lock'


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class WorkDirLock:
    """``with WorkDirLock(work_dir):`` -- hold the work dir for one training run."""

    def __init__(self, work_dir):
        self.work_dir = str(work_dir)
        self.path = osp.join(self.work_dir, LOCK_NAME)
        self.note = None
        self.held = False
        self.info = dict(pid=os.getpid(), host=socket.gethostname(),
                         started=time.strftime('%Y-%m-%d %H:%M:%S'),
                         command=' '.join(sys.argv))

    def _create(self):
        """Write the lock atomically (complete content or nothing); False if it exists."""
        tmp = f'{self.path}.{os.getpid()}.tmp'
        try:
            with open(tmp, 'w') as f:
                json.dump(self.info, f)
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            if osp.lexists(tmp):
                os.remove(tmp)

    def _try_create(self):
        try:
            os.makedirs(self.work_dir, exist_ok=True)
            return self._create()
        except (FileExistsError, NotADirectoryError):
            raise OutputError(f'the work dir {self.work_dir!r} is a file, not a folder (or part '
                              'of its path is); pass another --work-dir.') from None
        except OSError as exc:
            raise OutputError(f'cannot write into the work dir {self.work_dir!r} '
                              f'({exc.strerror or exc}; {os_error_hint(exc)}); pass another '
                              '--work-dir.') from None

    def acquire(self):
        for _ in range(3):
            if self._try_create():
                self.held = True
                return self
            holder = _read(self.path)
            if holder is None:  # vanished (released) or unreadable: look again
                if osp.exists(self.path) and time.time() - osp.getmtime(self.path) > 60:
                    self._take_over(holder, 'its lock file is unreadable')
                else:
                    time.sleep(0.2)
                continue
            if holder.get('host') != self.info['host']:
                raise WorkDirBusyError(
                    f"work dir {self.work_dir!r} is held by a run on host {holder.get('host')} "
                    f"(pid {holder.get('pid')}, started {holder.get('started')}); pass another "
                    f'--work-dir, or if that run is gone delete {self.path}.')
            if _pid_alive(holder.get('pid', -1)):
                raise WorkDirBusyError(
                    f"work dir {self.work_dir!r} is in use by a live run (pid {holder.get('pid')} "
                    f"on {holder.get('host')}, started {holder.get('started')}: "
                    f"{holder.get('command', '?')}); wait for it to end or pass another "
                    '--work-dir.')
            self._take_over(holder, f"its process {holder.get('pid')} is gone")
        raise WorkDirBusyError(f'could not take the lock {self.path}; another run keeps '
                               'taking it. Pass another --work-dir.')

    def _take_over(self, holder, why):
        started = (holder or {}).get('started', '?')
        self.note = (f'mmext: took over the stale lock of work dir {self.work_dir} ({why}; that '
                     f'run started {started} and did not finish cleanly).')
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self):
        if not self.held:
            return
        holder = _read(self.path)
        if holder and holder.get('pid') == self.info['pid'] and \
                holder.get('host') == self.info['host']:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
