"""Distillation: the teacher a run learns from, and a cache of its logits.

The teacher is a trained checkpoint's model in eval mode; the loss
(``nn.distillation_loss``) compares its softmax with the student's. Its
forward costs about a third of a student's training step, and every run of
one seed sees the same augmented batches (they are a pure function of seed
and epoch), so :class:`TeacherLogits` can keep each epoch's logits on disk
and let later runs read them instead: the same float32 arrays the forward
would compute with the same thread settings.
"""

import hashlib
import json
import pathlib

import numpy as np

from . import checkpoint as ckpt
from .atomic import write_atomically


def load_teacher(path, student):
    """The teacher model of ``path`` in eval mode, refused (ValueError naming the
    file) unless it takes the student's images and predicts its classes."""
    teacher = ckpt.load_model(path)
    if teacher.input_size != student.input_size:
        raise ValueError(f"{path}: teacher takes {teacher.input_size}x{teacher.input_size} "
                         f"images, the student {student.input_size}x{student.input_size}")
    if teacher.fc.weight.data.shape[0] != student.fc.weight.data.shape[0]:
        raise ValueError(f"{path}: teacher has {teacher.fc.weight.data.shape[0]} classes, the "
                         f"student {student.fc.weight.data.shape[0]}")
    return teacher


class TeacherLogits:
    """Per-epoch teacher logits under ``cache_dir/<key>/``, where the key hashes
    everything that decides them: the teacher file, the training images and
    labels, the seed, batch size, augmentation and steps per epoch.

    ``load(epoch)`` returns float32 (steps, batch, classes) or None (missing
    or not matching the key's shape, then recomputed); ``save(epoch, logits)``
    writes atomically, so concurrent runs never read half a file.
    """

    def __init__(self, cache_dir, teacher_path, x_train, y_train, seed, batch_size, augment,
                 steps, classes):
        key = {"teacher_sha256": ckpt.file_sha256(teacher_path),
               "images_sha256": hashlib.sha256(np.ascontiguousarray(x_train)).hexdigest(),
               "labels_sha256": hashlib.sha256(np.ascontiguousarray(y_train)).hexdigest(),
               "seed": int(seed), "batch_size": int(batch_size), "augment": bool(augment),
               "steps": int(steps), "classes": int(classes)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = pathlib.Path(cache_dir) / digest
        self.shape = (steps, batch_size, classes)
        self.dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(self.dir / "key.json", key)

    def _path(self, epoch):
        return self.dir / f"epoch-{epoch + 1:04d}.npy"

    def load(self, epoch):
        path = self._path(epoch)
        try:
            logits = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if logits.shape != self.shape or logits.dtype != np.float32:
            return None
        return logits

    def save(self, epoch, logits):
        logits = np.asarray(logits, np.float32)
        if logits.shape != self.shape:
            raise ValueError(f"teacher logits of shape {logits.shape}, expected {self.shape}")
        write_atomically(self._path(epoch), lambda f: np.save(f, logits, allow_pickle=False))
