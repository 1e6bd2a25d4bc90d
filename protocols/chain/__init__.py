"""The chain adapter: the only code in dtnode that talks to the EVM.

- ``abi``: the JobManager ABI/bytecode exported from the Hardhat build (``load_artifact``).
- ``errors``: the ``ChainError`` tree and ``decode_revert`` (any backend's revert -> a class named after it).
- ``client``: ``JobManagerClient`` (a typed method per contract function; views in ``reader``), ``deploy``.
- ``ticket``: the EIP-712 ticket a leader signs and ``submitUpdate`` verifies.
- ``models``: frozen views (``JobInfo``, ``UpdateInfo``, ...); ``cids``: CID string <-> on-chain bytes.
- ``events``: ``ChainEvent`` (one subclass per event) and the decoder behind ``JobManagerClient.get_events``.
- ``backends``: ``HardhatNode``, ``in_process_chain``, ``dev_accounts``, ``increase_time``, ``keep_time``.
- ``tx``/``nonce``/``rpc``: sending with nonce management, receipts with deadlines, bounded retries.

Everything here is blocking (web3.py's sync API): trio code calls it through ``trio.to_thread.run_sync``.
This package never imports ``node`` or ``storage``.
"""
