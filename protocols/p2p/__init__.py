"""The P2P layer: node identity and keystore (``identity``, ``keystore``), a hardened libp2p host with TCP+Noise+Yamux,
GossipSub and a Kademlia DHT (``node.P2PNode``, ``config.P2PConfig``), presence discovery, signed typed gossip, and
request/response streams (``reqresp``). Import from the submodules; this package never imports ``node/``.

Kept free of imports on purpose: ``protocols.messages`` imports ``protocols.p2p.identity``, and ``node`` imports
``protocols.messages``, so importing ``node`` here would be circular.
"""
