"""Where the chunk update runs: the compiled core ``ncfast._C`` (``core``), the choice of
implementation per device (``dispatch``), the CUDA glue (``cuda``), the pure-PyTorch
reference (``reference``) and the update as a ``torch.library`` operator (``ops``).

Everything here works on a :class:`ncfast._state.StatsState`; nothing here knows ClassStats.
"""
