"""Checkpoints: named arrays plus a JSON config in one ``.npz``, never pickle.

Layout of a checkpoint file: an ordinary numpy ``.npz`` (a zip of ``.npy``
members) holding every array under its name, plus the config serialised as
UTF-8 JSON in a uint8 array under the reserved key ``__config__``.

Naming conventions: model arrays are ``model.<name>`` (from
``Module.state_dict()``), optimizer state is ``optim.<name>``; everything
else (epoch, metrics, ``rng.bit_generator.state``) goes into the config.

Writes are atomic (checkpoints and the JSON files beside them, via
:func:`write_json`; minisnn.atomic): a crash leaves either the old
checkpoint or the new one, never half a file.

Reads trust nothing in the file (minisnn.npz): every member's name, dtype
and shape are checked from its header before any data is read, declared
sizes are bounded (by the model's own arrays in :func:`load_model`, else by
``max_bytes``), the JSON config is parsed with a nesting limit, and every
fault is a ValueError naming the file.
"""

import hashlib
import json
import pathlib
import re
import zipfile

import numpy as np

from .atomic import write_atomically
from .models import build_model
from .npz import NpzError, NpzReader

CONFIG_KEY = "__config__"
MAX_CHECKPOINT_BYTES = 1 << 31  # declared array bytes, when no model says what to expect
MAX_CONFIG_BYTES = 1 << 22  # the JSON config (metrics of a few thousand epochs fit easily)
MAX_JSON_DEPTH = 64
_WRITE_PIECE = 1 << 20  # bytes handed to the zip writer at a time
# Complete JSON strings (skipped: brackets inside them do not nest), brackets, or the
# quote opening an unterminated string; possessive, so the scan stays linear.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]|"', re.S)


def _json_default(value):
    # Metrics computed with numpy arrive as numpy scalars; store them as Python numbers.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_checkpoint(path, arrays, config, compress=False):
    """Write ``arrays`` (name -> array) and ``config`` (JSON-able dict) to ``path``.

    Returns the path as a :class:`pathlib.Path`. Object arrays, non-string
    names, the reserved name ``__config__`` and configs JSON cannot hold are
    refused with a ValueError naming the file and the culprit. ``compress``
    deflates the members (smaller files to ship, slower to write).
    """
    path = pathlib.Path(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config must be a dict, found {type(config).__name__}")
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: array names must be non-empty strings, found {name!r}")
        if name == CONFIG_KEY:
            raise ValueError(f"{path}: array name {CONFIG_KEY!r} is reserved for the config")
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise ValueError(f"{path}: array {name!r} has dtype {value.dtype}, which only "
                             "pickle can store; checkpoints hold plain numeric arrays")
        checked[name] = value
    try:
        text = json.dumps(config, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: config is not JSON serialisable: {exc}") from None
    checked[CONFIG_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    return write_atomically(path, lambda f: _write_npz(f, checked, compress))


def save_inference(path, model, **info):
    """A compressed checkpoint of ``model``'s state alone (no optimizer state):
    what :func:`load_model` needs, plus ``info`` (e.g. accuracy) in the config."""
    arrays = {f"model.{k}": v for k, v in model.state_dict(copy=False).items()}
    return save_checkpoint(path, arrays, dict(info, model=model.config), compress=True)


def file_sha256(path):
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path, value):
    """Write ``value`` as indented JSON to ``path``, atomically like a checkpoint.

    Whoever polls for the file (a driver waiting for ``metrics.json``) sees it
    complete or not at all. Numpy scalars become numbers; anything else JSON
    cannot hold is refused with a ValueError naming the file, and nothing is written.
    """
    path = pathlib.Path(path)
    try:
        text = json.dumps(value, default=_json_default, indent=2) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not JSON serialisable: {exc}") from None
    return write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def _write_npz(f, arrays, compress=False):
    # What np.savez does, minus its keyword collisions (an array named "file").
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, mode="w", compression=mode, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                _write_npy(member, value)


def _write_npy(f, value):
    """The bytes np.lib.format.write_array writes (a Fortran-ordered array
    in C order), the data in pieces of _WRITE_PIECE straight from the
    array: write_array copies up to 16 MiB at a time into a zip member,
    whose compressor holds as much again. Never pickles."""
    value = np.asarray(value, order="C")
    if value.dtype.hasobject:
        raise ValueError(f"array of dtype {value.dtype} needs pickle; refused")
    np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(value))
    data = value.reshape(-1).view(np.uint8)
    for start in range(0, data.size, _WRITE_PIECE):
        f.write(data[start:start + _WRITE_PIECE])


def _open(path, max_bytes=MAX_CHECKPOINT_BYTES):
    """An NpzReader of ``path`` (every member's header checked), or ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    try:
        return NpzReader(path, max_bytes)
    except NpzError as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path, exc):
    return ValueError(f"{path}: not a readable checkpoint (truncated, corrupt or not an .npz "
                      f"written by save_checkpoint): {exc.detail}")


def _read(reader, name, path):
    try:
        return reader.read(name)
    except NpzError as exc:
        raise _unreadable(path, exc) from None


def _config(reader, path):
    member = reader.members.get(CONFIG_KEY)
    if member is None:
        raise ValueError(f"{path}: no {CONFIG_KEY!r} entry, so no config; "
                         "was it written by save_checkpoint?")
    if member.dtype != np.uint8 or len(member.shape) != 1:
        raise ValueError(f"{path}: {CONFIG_KEY!r} should be 1-D uint8 JSON bytes, "
                         f"found dtype {member.dtype} shape {member.shape}")
    if member.nbytes > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: config of {member.nbytes} bytes, more than the "
                         f"{MAX_CONFIG_BYTES} allowed")
    try:
        text = _read(reader, CONFIG_KEY, path).tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: config is not valid UTF-8 JSON: {exc}") from None
    config = parse_json(text, path, "config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config should be a JSON object, found {type(config).__name__}")
    return config


def load_checkpoint(path, max_bytes=MAX_CHECKPOINT_BYTES):
    """Read a checkpoint: returns ``(arrays, config)``, arrays fully in memory.

    Never unpickles. Every member's name, dtype and shape are checked from
    its header before any data is read (minisnn.npz), their declared sizes
    must add up to at most ``max_bytes``, each member's CRC is verified. A
    missing, truncated, corrupt, oversized or foreign file, a missing config
    or invalid config JSON raise ValueError naming the file and the fault.
    """
    path = pathlib.Path(path)
    with _open(path, max_bytes) as reader:
        config = _config(reader, path)
        arrays = {name: _read(reader, name, path) for name in reader.members if name != CONFIG_KEY}
    return arrays, config


def load_config(path):
    """The config of a checkpoint, without reading its arrays."""
    path = pathlib.Path(path)
    with _open(path) as reader:
        return _config(reader, path)


def parse_json(text, where, what="config", allow_nan=True, max_depth=MAX_JSON_DEPTH):
    """``json.loads(text)``, refusing (ValueError naming ``where``) nesting deeper
    than ``max_depth`` before parsing (deeper JSON ends in a RecursionError) and,
    unless ``allow_nan``, the constants NaN and Infinity."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        token = token.group()
        if token == '"':
            break  # an unterminated string: json.loads says where below
        if token[0] != '"':
            depth += 1 if token in "[{" else -1
        if depth > max_depth:
            raise ValueError(f"{where}: {what} nests deeper than {max_depth} levels")

    def refuse(constant):
        raise ValueError(f"{constant} is not a number")

    try:
        return json.loads(text, **({} if allow_nan else {"parse_constant": refuse}))
    except ValueError as exc:  # JSONDecodeError, and integers of more than 4300 digits
        raise ValueError(f"{where}: {what} is not valid UTF-8 JSON: {exc}") from None


def read_json(path, what="JSON", max_bytes=MAX_CONFIG_BYTES, allow_nan=False):
    """A JSON file's value via :func:`parse_json`; size bounded, ValueError naming the file."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ValueError(f"{path}: {what} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ValueError(f"{path}: {what} is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: {what} is not valid UTF-8 JSON: {exc}") from None
    return parse_json(text, path, what, allow_nan)


def check_config(found, expected, path, keys=None, defaults=None):
    """Raise ValueError if ``found[key] != expected[key]`` for any of ``keys``.

    ``keys`` defaults to every key of ``expected``. Expected values go through
    the same JSON round trip as saved ones, so a tuple matches the list it
    was stored as. A key absent from ``found`` but present in ``defaults``
    reads as that default: the checkpoint predates the option.
    """
    defaults = {} if defaults is None else defaults
    for key in expected if keys is None else keys:
        if key not in expected:
            raise ValueError(f"{path}: check_config asked for key {key!r}, "
                             "which the expected config lacks")
        want = json.loads(json.dumps(expected[key], default=_json_default))
        if key not in found and key in defaults:
            if defaults[key] != want:
                raise ValueError(f"{path}: config has no key {key!r} (written before the option "
                                 f"existed, so it had the default {defaults[key]!r}), "
                                 f"expected {want!r}")
            continue
        if key not in found:
            raise ValueError(f"{path}: config has no key {key!r}, expected {want!r}")
        if found[key] != want:
            raise ValueError(f"{path}: config {key!r} is {found[key]!r}, expected {want!r}")


def restore_module(module, arrays, path, prefix="model."):
    """Load the arrays named ``prefix + <state name>`` into ``module``.

    Errors name the file, the array and the expected vs found shape.
    """
    state = {name[len(prefix):]: value for name, value in arrays.items()
             if name.startswith(prefix)}
    # load_state_dict names a missing array but not its shape; say both here.
    expected = {name: p.data.shape for name, p in module.named_parameters()}
    expected.update({name: np.shape(b) for name, b in module.named_buffers()})
    for name, shape in expected.items():
        if name not in state:
            raise ValueError(f"{path}: missing array {prefix + name!r}, "
                             f"expected shape {shape}, found none")
    module.load_state_dict(state, source=str(path))


def init_module_from(module, arrays, path, prefix="model."):
    """Initialise ``module`` from another model's arrays: every parameter or
    buffer whose name ``prefix + <state name>`` is in ``arrays`` is copied, the
    rest keep their values. Used to start a binary or sub-bit model from a
    trained full-precision one (its conv weights become the latent weights).

    Returns the state names kept. Refuses, changing nothing, a shared name
    with another shape and a source that shares no name at all.
    """
    state = module.state_dict()
    shared = [name for name in state if prefix + name in arrays]
    if not shared:
        raise ValueError(f"{path}: no array matches the model's parameters "
                         f"(expected names like {prefix + next(iter(state))!r})")
    for name in shared:
        value = np.asarray(arrays[prefix + name])
        if value.shape != state[name].shape:
            raise ValueError(f"{path}: array {prefix + name!r} has shape {value.shape}, "
                             f"expected {state[name].shape}")
        state[name] = value
    module.load_state_dict(state, source=str(path))
    return [name for name in state if name not in shared]


def load_model(path):
    """The model a training checkpoint holds, rebuilt and restored, in eval mode.

    The config is read first; the names and shapes of the file's ``model.*``
    members are then checked against the model's arrays from their headers,
    so nothing beyond what the model needs is ever read (optimizer state is
    skipped). Arrays holding NaN or infinity are refused: nothing downstream
    (inference, ROM export) can make sense of them.
    """
    path = pathlib.Path(path)
    with _open(path) as reader:
        config = _config(reader, path)
        if not isinstance(config.get("model"), dict):
            raise ValueError(f"{path}: config has no 'model' entry (not a training checkpoint?)")
        try:
            model = build_model(config["model"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: model config {config['model']} cannot be built: {exc}") from None
        _check_headers(reader, model.state_dict(), path, "model.")
        arrays = {name: _read(reader, name, path) for name in reader.members
                  if name.startswith("model.")}
    for name, value in arrays.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ValueError(f"{path}: array {name!r} holds NaN or infinite values "
                             f"({np.count_nonzero(~np.isfinite(value))} of {value.size})")
    restore_module(model, arrays, path)
    return model.eval()


def _check_headers(reader, state, path, prefix):
    """Before any data is read: no member named ``prefix + <name>`` that ``state``
    lacks, none with another shape, so what is read is what the model needs
    (a missing array or another dtype kind is reported by restore_module)."""
    found = {name[len(prefix):]: m for name, m in reader.members.items() if name.startswith(prefix)}
    unexpected = sorted(set(found) - set(state))
    if unexpected:
        raise ValueError(f"{path}: unexpected array {prefix + unexpected[0]!r} not in the model")
    for name, member in found.items():
        if member.shape != np.shape(state[name]):
            raise ValueError(f"{path}: array {prefix + name!r} has shape {member.shape}, "
                             f"expected {np.shape(state[name])}")
