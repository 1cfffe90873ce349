"""The one error class of the path-allocation model."""
from __future__ import annotations

from controller.errors import InnetError


class TeError(InnetError):
    """A TE network, flow, candidate path, instance document or allocator request is unusable:
    the message names what and where (flow, link, node or file)."""
