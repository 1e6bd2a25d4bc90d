"""The P2P layer: node identity and keystore (``identity``, ``keystore``), a libp2p host with TCP+Noise+Yamux and a
Kademlia DHT (``node.P2PNode``, a facade; ``config.P2PConfig``), signed typed gossip (``gossip``), presence discovery
and peer exchange (``discovery``), request/response streams (``reqresp``), and the py-libp2p patches installed once
per process (``hardening.install_hardening``). Import from the submodules; this package never imports ``node/``.

Kept free of imports on purpose: ``protocols.messages`` imports ``protocols.p2p.identity``, and ``node`` imports
``protocols.messages``, so importing ``node`` here would be circular.
"""
