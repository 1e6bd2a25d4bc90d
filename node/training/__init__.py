"""Training core: models, Fashion-MNIST shards, deterministic local training, delta codec, aggregation, replay.

Pure computation with no network and no trio in it: the roles in ``node.roles`` call these functions (through
``trio.to_thread.run_sync``, since they block) and move the bytes they produce over libp2p and IPFS.
"""
