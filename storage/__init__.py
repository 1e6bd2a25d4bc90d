"""Content addressing: CIDs, block store, UnixFS import/export, block exchange, Kubo RPC backend, pins.

This package never imports ``node``.
"""
