"""recmig's built-in transfer strategies (importable as ``recmig_strategies``).

They register through the ``recmig.strategies`` entry-point group in pyproject.toml, the same
way a third-party plugin does; see :mod:`recmig.strategy` for the contract.
"""
