"""Reading snapshots back: ``load`` (objects and frames, lazily), and ``process`` (what a
resumed program gets back besides its objects). Resuming itself is ``relive.runner.resume``,
with ``relive.interp.rebuild`` rebuilding the stack."""
