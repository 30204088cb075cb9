"""Reading our PyTorch checkpoints without running anything they carry.

`torch.load` unpickles, and a pickle can name any callable for the loader to call: an
unrestricted load of a checkpoint that came with a bundle (``training/detector.pt``) or sat in a
shared run folder runs whatever code its author chose. Every checkpoint we read goes through
`load_checkpoint`, with ``weights_only=True``: tensors, containers, numbers and strings only.

An ultralytics detector checkpoint also holds its network, pickled as ``torch.nn`` and
``ultralytics.nn`` modules (an unfinished run's network also keeps its settings, an
``ultralytics.utils.IterableSimpleNamespace``). We read only the checkpoint's metadata (epoch,
training arguments), so with `networks` those classes are stood in for by inert placeholders that
take the saved state and drop it. Modules are pickled as "make an empty object, then set its
state", never as a call, and the settings namespace as a call without arguments; a checkpoint
that calls one of them otherwise (the way a payload would smuggle arguments into a constructor)
is refused like any other callable. Ultralytics then loads such a checkpoint with its own loader;
what passed here holds nothing that runs when it is unpickled.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.exceptions import CheckpointError

NETWORK_MODULES = ("torch.nn.modules.", "ultralytics.nn.")
"""Where the classes of a pickled network live (torch's layers, ultralytics' blocks)."""
NETWORK_SETTINGS = frozenset({"ultralytics.utils.IterableSimpleNamespace"})
"""The namespace an ultralytics network keeps its settings in."""


class _NetworkStandIn:
    """What a pickled network module reads as: its state is dropped, it cannot be called."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError(
            "the checkpoint calls a network class instead of restoring a module"
        )

    def __setstate__(self, state: object) -> None:
        """Drop the module's saved state: nothing of the network is used."""


class _SettingsStandIn:
    """What a network's settings namespace reads as: made without arguments, state dropped."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        if args or kwargs:
            raise pickle.UnpicklingError(
                "the checkpoint calls a network's settings class with arguments"
            )

    def __setstate__(self, state: object) -> None:
        """Drop the settings: nothing of the network is used."""


def _stand_in(name: str) -> type | None:
    """The placeholder a network's class `name` reads as, or None if it is no such class."""
    if name in NETWORK_SETTINGS:
        return _SettingsStandIn
    module, _, attribute = name.rpartition(".")
    if f"{module}.".startswith(NETWORK_MODULES) and attribute[:1].isupper():
        return _NetworkStandIn
    return None


def load_checkpoint(path: Path, *, networks: bool = False) -> dict[str, Any]:
    """The dict saved in the checkpoint at `path`, read weights-only; `CheckpointError` if not.

    With `networks`, a pickled network (classes under `NETWORK_MODULES`, `NETWORK_SETTINGS`)
    reads as inert stand-ins; anything else that is not plain data is refused, named, before it
    is unpickled.
    """
    import torch

    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"cannot read the checkpoint {path}: {e}") from e
    stand_ins = {name: _stand_in(name) for name in named} if networks else {}
    refused = sorted(name for name in named if stand_ins.get(name) is None)
    if refused:
        raise CheckpointError(
            f"{path} is not a checkpoint of ours: it names {', '.join(refused)}, code that an "
            "unrestricted load would import and may run; refused unread"
        )
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (cls, name) for name, cls in stand_ins.items() if cls is not None
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"refused the checkpoint {path}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state
