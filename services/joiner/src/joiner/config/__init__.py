"""The joiner's configuration, from a Joiner YAML file or from environment variables.

YAML (the original project's Joiner resource, or just its ``spec``)::

    window: 20s
    stream:
      from: [tenants, poweruse]              # or {name, pubsub, topic, route} each
      to:
        - component: billable-proc/billables # Dapr service invocation: app-id/method
        - stream: pubsub-name/topic          # Dapr publish
      select: '{"customer_id": tenants.customer_id, ...}'
      where: tenants.tenant_id == poweruse.tenant_id && poweruse.power_use >= 1.0

Environment (names of the original joiner): ``JOINER_STREAM_FROM_0`` / ``_1`` = ``pubsub|topic|route``
(or just ``topic``), ``JOINER_STREAM_TO_COMPONENT`` = ``app/route``, ``JOINER_STREAM_TO_STREAM`` =
``pubsub/topic``, ``JOINER_STREAM_WHERE`` (alias ``JOINER_STREAM_FILTER``), ``JOINER_STREAM_SELECT``,
``JOINER_WINDOW_SIZE``. ``JOINER_CONFIG`` names a YAML file instead; variables set beside it win.

Modules: ``names`` (every setting once: YAML path, variables, reader), ``readers`` (one reader per kind of
value), ``model`` (the typed configuration, one model per join mode, and its cross-checks), ``load``.
"""

from joiner.config.load import config_from_yaml, load_config
from joiner.config.model import (
    DEFAULT_MAX_WINDOW_BYTES,
    DEFAULT_MAX_WINDOW_EVENTS,
    InvokeTarget,
    JoinerConfig,
    PublishTarget,
    StreamSource,
    TableJoinConfig,
    WindowJoinConfig,
)

__all__ = [
    "DEFAULT_MAX_WINDOW_BYTES",
    "DEFAULT_MAX_WINDOW_EVENTS",
    "InvokeTarget",
    "JoinerConfig",
    "PublishTarget",
    "StreamSource",
    "TableJoinConfig",
    "WindowJoinConfig",
    "config_from_yaml",
    "load_config",
]
