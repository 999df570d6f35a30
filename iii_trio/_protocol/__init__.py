"""The wire protocol: message models and the frame codec (no I/O).

Public names are re-exported by ``iii_trio.protocol``.
"""
