"""The ``nfmesh`` program's composition root, above ``gateway`` and ``perf``.

``nfmesh_cli.main`` is the command line (``nfmesh run|demo|config|version|ca|ctl|top|perf``),
``nfmesh_cli.ca`` the mesh CA's subcommands.  Nothing in ``gateway``, ``nf_adapters``,
``dataplane`` or ``perf`` imports this package (tests/test_layers.py checks it).
"""
