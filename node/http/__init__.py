"""The node's read-only web dashboard and Prometheus ``/metrics`` (``--http HOST:PORT``), served inside its trio loop.

``address`` parses the setting; ``gather`` reads the chain incrementally, ``facts`` shapes what the pages show,
``measure`` evaluates committed checkpoints fetched by CID, ``feed`` is the service tying them together, ``local``
is this node's own state, ``metrics`` the Prometheus collector, ``sse`` the change stream, ``app`` the routes,
``server`` hypercorn's trio worker, ``plot`` the metric/loss picture as PNG for the command line.
"""
