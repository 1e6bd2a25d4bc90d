"""What crosses a wire: message and spec schemas, gossip topics, stream protocols, the chain adapter.

This package never imports ``node``.
"""
