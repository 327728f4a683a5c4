"""Loading the first-mask proposal models (CLIPSeg, SegFormer) with ``transformers``.

``transformers`` is an optional dependency (the ``prompts`` extra, ``pip install
"seggpt-vos[prompts]"``): it is imported only inside these functions, so ``vos --help`` and
``vos run --first-mask`` never import it, and SegGPT itself never needs it. Each model is read with
its own ``from_pretrained`` from a hub id (the Hugging Face cache, or a download when online) or a
local folder written by ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.devices import check_device_dtype
from seggpt_model.errors import one_line
from vos.errors import UserError

#: How to get ``transformers``, quoted in the error raised when it is missing.
PROMPTS_EXTRA = "pip install 'seggpt-vos[prompts]'"


class ProposalModelError(UserError):
    """A proposal model that cannot be found, read, or is not the kind of model asked for."""


def require_transformers(what: str) -> Any:
    """Import ``transformers`` for ``what`` (e.g. ``"--text"``), or fail with the extra to install.

    Returns:
        the ``transformers`` module.

    Raises:
        UserError: ``transformers`` is not installed.
    """
    try:
        import transformers  # optional dependency (the prompts extra): imported when needed
    except ImportError:
        raise UserError(f"{what} needs the transformers package: install the prompts extra: "
                        f"{PROMPTS_EXTRA}") from None
    return transformers


@contextlib.contextmanager
def _quiet_transformers(transformers) -> Iterator[None]:
    """No progress bar and no info/warning logs from ``transformers`` inside the block (the
    loader reports problems itself)."""
    logging = transformers.utils.logging
    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _load_error(name: str, option: str, exc: BaseException, local: bool) -> ProposalModelError:
    """One line for a failed ``from_pretrained``, worded like the SegGPT checkpoint errors."""
    kinds = {type(e).__name__ for e in _chain(exc)}
    if not local and kinds & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}:
        return ProposalModelError(
            f"model '{name}' is not in the local Hugging Face cache and cannot be downloaded "
            f"(offline?): pass a local folder (saved with save_pretrained) with {option}")
    if not local and kinds & {"RepositoryNotFoundError", "HFValidationError"}:
        return ProposalModelError(f"'{name}' is neither an existing folder nor a model on the "
                                  f"Hugging Face hub ({option})")
    return ProposalModelError(f"{name}: cannot load the model ({one_line(exc)})")


def load_pretrained(name_or_path: str | os.PathLike, *, model_type: str, model_class: str,
                    processor_class: str, option: str, needed_by: str, device: str | None = None,
                    dtype: str | None = None) -> tuple[Any, Any, Any, Any]:
    """Load a ``transformers`` model and its processor, in eval mode, on the chosen device/dtype.

    Args:
        name_or_path: hub repo id (``owner/name``) or a local folder in hub layout.
        model_type: the ``config.model_type`` required (``"clipseg"``, ``"segformer"``).
        model_class, processor_class: ``transformers`` class names to load them with.
        option: the command-line option that names the model (``--text-model``), for messages.
        needed_by: the prompt options that need this model (``--text/--example``), for the
            message when ``transformers`` is missing.
        device, dtype: ``--device`` / ``--dtype`` strings (:mod:`pipelines.devices`: ``auto`` is
            cuda when available; dtype ``auto`` is bfloat16 on cuda, float32 on cpu).

    Returns:
        ``(model, processor, device, dtype)``: the model on ``device`` (``torch.device``) in
        ``dtype`` (``torch.dtype``), ``eval()``, and its processor.

    Raises:
        UserError: ``transformers`` is missing; an unknown or unavailable device/dtype.
        ProposalModelError: (one line) no such folder, not in the cache while offline, not on the
            hub, a checkpoint of another model type, or unreadable files.
    """
    transformers = require_transformers(needed_by)
    try:
        dev, dt = check_device_dtype(device, dtype)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    local = path.exists()
    if local:
        if not path.is_dir():
            raise ProposalModelError(f"{path}: not a folder ({option} takes a hub id or a folder "
                                     f"written by save_pretrained)")
        if not (path / "config.json").is_file():
            raise ProposalModelError(f"{path}: no config.json in this folder (hub layout expected)")
        text = str(path)
    elif text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ProposalModelError(f"{option}: no such folder: {text}")
    with _quiet_transformers(transformers), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = transformers.AutoConfig.from_pretrained(text)
        except (OSError, ValueError, KeyError) as exc:
            raise _load_error(text, option, exc, local) from None
        found = getattr(config, "model_type", None)
        if found != model_type:
            raise ProposalModelError(f"{text}: a {found or 'unknown'} checkpoint, not a {model_type} "
                                     f"model ({option})")
        try:
            model, info = getattr(transformers, model_class).from_pretrained(
                text, dtype=dt, output_loading_info=True)
            processor = getattr(transformers, processor_class).from_pretrained(text)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise _load_error(text, option, exc, local) from None
    missing = list(info.get("missing_keys") or []) + list(info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(str(k) for k in missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.warn(f"{text}: {len(missing)} weight(s) missing or mis-shaped and left random: "
                      f"{shown}", UserWarning, stacklevel=2)
    return model.to(dev).eval(), processor, dev, dt


class ProposalModel:
    """A loaded proposal model and its processor; reusable across frames and calls.

    Subclasses name what to load in the class attributes below and add the prediction methods.

    Attributes:
        name: the hub id or folder it was loaded from.
        model: the ``transformers`` model, eval mode.
        processor: its processor.
        device, dtype: where the model runs (``torch.device``, ``torch.dtype``).
    """

    #: Hub id loaded when no name is given.
    DEFAULT: str = ""
    #: ``config.model_type`` required, and the ``transformers`` classes that load model and processor.
    MODEL_TYPE: str = ""
    MODEL_CLASS: str = ""
    PROCESSOR_CLASS: str = ""
    #: The option naming the checkpoint, and the prompt options that need it (for messages).
    OPTION: str = ""
    NEEDED_BY: str = ""

    def __init__(self, model: Any, processor: Any, device: Any, dtype: Any, name: str) -> None:
        self.model, self.processor, self.device, self.dtype, self.name = model, processor, device, dtype, name

    @classmethod
    def load(cls, name_or_path: str | os.PathLike | None = None, *, device: str | None = None,
             dtype: str | None = None):
        """Load with the model's own ``from_pretrained`` (see :func:`load_pretrained`).

        Args:
            name_or_path: hub id or local folder; None means :attr:`DEFAULT`.
            device, dtype: ``--device`` / ``--dtype`` strings (see :mod:`pipelines.devices`).

        Raises:
            UserError: ``transformers`` missing (names the ``prompts`` extra), bad device/dtype.
            ProposalModelError: not found, offline without a cached copy, or another model type.
        """
        name = os.fspath(name_or_path) if name_or_path is not None else cls.DEFAULT
        model, processor, dev, dt = load_pretrained(
            name, model_type=cls.MODEL_TYPE, model_class=cls.MODEL_CLASS,
            processor_class=cls.PROCESSOR_CLASS, option=cls.OPTION, needed_by=cls.NEEDED_BY,
            device=device, dtype=dtype)
        return cls(model, processor, dev, dt, name)
